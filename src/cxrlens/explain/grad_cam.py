"""Grad-CAM (Selvaraju et al.; paper 000 eq. 1-2), for heatmaps and, differentiably, for the CAM loss.

    alpha_k^c = 1/(h w) sum_ij d y^c / d A^k_ij          (eq. 1)
    L^c       = ReLU(sum_k alpha_k^c A^k)                 (eq. 2)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrlens.explain.base import METHODS, GradientCAM, class_gradients, weighted_sum


@METHODS.register("gradcam")
class GradCAM(GradientCAM):
    def weights(self, gradients: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return gradients.mean(dim=(3, 4))                                                # eq. 1


def gradcam(features: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor, relu: bool = True,
            create_graph: bool = False) -> torch.Tensor:
    """Grad-CAM at feature resolution, B x P x h x w.

    With ``create_graph`` the maps stay differentiable w.r.t. everything upstream of
    ``features`` (paper 000's CAM loss trains the encoder through them).
    """
    if features.dim() != 4 or logits.dim() != 2 or logits.shape[0] != features.shape[0]:
        raise ValueError(f"expected features B x C x h x w and logits B x K, got {tuple(features.shape)} "
                         f"and {tuple(logits.shape)}")
    gradients = class_gradients(logits, features, classes, create_graph, retain_graph=create_graph)
    cams = weighted_sum(GradCAM().weights(gradients, features), features)                 # eq. 2
    return F.relu(cams) if relu else cams
