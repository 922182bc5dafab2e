"""Pixel correlation module (paper 003 eq. 2, from SEAM, Wang et al. 2020).

    y_i = 1 / C(x_i) * sum_j ReLU( theta(x_i)^T theta(x_j) / (|theta(x_i)| |theta(x_j)|) ) * yhat_j

``theta`` is a 1x1 convolution without non-linearity on the backbone's feature map
``x``; ``C(x_i)`` normalises the affinities of pixel i to sum to one, so each refined
pixel is a weighted average of the original CAM. Before refinement the CAM is made
non-negative, scaled to a maximum of 1 per class, and its non-maximum activations are
suppressed to zero (paper 003 Sec. 4.1: at each pixel only the strongest class keeps
its value), as SEAM does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-5


def suppress_non_maximum(cams: torch.Tensor, nms: bool = True) -> torch.Tensor:
    """ReLU, per-class max scaling to 1, and (``nms``) zero where a class is not the pixel's maximum."""
    cams = F.relu(cams)
    cams = cams / (cams.flatten(2).max(dim=2).values[..., None, None] + _EPS)
    if nms and cams.shape[1] > 1:
        cams = cams * (cams == cams.max(dim=1, keepdim=True).values)
    return cams


class PixelCorrelationModule(nn.Module):
    """``forward(features B x C x h x w, cams B x K x h x w) -> refined B x K x h x w`` (eq. 2).

    ``nms``: whether :meth:`suppress` keeps only each pixel's strongest class before refinement.
    """

    def __init__(self, in_channels: int, embed_channels: int = 128, nms: bool = True) -> None:
        super().__init__()
        self.theta = nn.Conv2d(in_channels, embed_channels, kernel_size=1, bias=False)
        self.nms = nms

    def suppress(self, cams: torch.Tensor) -> torch.Tensor:
        """The raw CAMs as refinement takes them (:func:`suppress_non_maximum` with this module's ``nms``)."""
        return suppress_non_maximum(cams, self.nms)

    def affinity(self, features: torch.Tensor) -> torch.Tensor:
        """Row-normalised ReLU cosine affinities, B x N x N (N = h w)."""
        embedded = F.normalize(self.theta(features).flatten(2), dim=1)            # B x E x N
        affinity = F.relu(torch.bmm(embedded.transpose(1, 2), embedded))          # B x N x N
        return affinity / (affinity.sum(dim=2, keepdim=True) + _EPS)              # 1 / C(x_i)

    def forward(self, features: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
        if features.shape[-2:] != cams.shape[-2:]:
            raise ValueError(f"features {tuple(features.shape)} and CAMs {tuple(cams.shape)} differ in size")
        refined = torch.bmm(cams.flatten(2), self.affinity(features).transpose(1, 2))  # B x K x N
        return refined.view_as(cams)
