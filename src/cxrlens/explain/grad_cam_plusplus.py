"""Grad-CAM++ (Chattopadhay et al. 2018), weights as in pytorch-grad-cam.

``a_ij = g^2 / (2 g^2 + sum_ab A_ab g^3)``, ``w_k^c = sum_ij a_ij ReLU(g_ij)`` with
``g = dy^c/dA^k``; the map is ``ReLU(sum_k w_k^c A^k)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrlens.explain.base import METHODS, GradientCAM


@METHODS.register("gradcampp")
class GradCAMPlusPlus(GradientCAM):
    def weights(self, gradients: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        squared = gradients.pow(2)
        activation_sums = features.sum(dim=(2, 3))[None, :, :, None, None]
        a = squared / (2 * squared + activation_sums * squared * gradients + 1e-6)
        a = torch.where(gradients != 0, a, torch.zeros_like(a))
        return (F.relu(gradients) * a).sum(dim=(3, 4))
