"""BYOL + CAM loss (paper 000 eq. 8): ``L_BYOL + lambda L_CAM``.

During pretraining there is no classifier, so the class scores ``y^c`` of eq. 1 come from
a linear finding head on the pooled online features of the first view, trained by the
CAM loss alone (the paper does not say where its scores come from; this is the smallest
head that makes eq. 1 defined). :func:`cxrlens.train.cam_loss.cam_loss` compares its
differentiable Grad-CAM with the view's box mask.
"""

from __future__ import annotations

import torch
from torch import nn

from cxrlens.config import BYOLCAMConfig
from cxrlens.models.backbones import Backbone
from cxrlens.ssl.base import METHODS
from cxrlens.ssl.byol import BYOL
from cxrlens.train.cam_loss import cam_loss


@METHODS.register("byol-cam")
class BYOLCAM(BYOL):
    """``forward(view1, view2, box_mask, box_findings)`` -> ``{"loss", "byol_loss", "cam_loss"}``."""

    config: BYOLCAMConfig

    def __init__(self, encoder: Backbone, config: BYOLCAMConfig = BYOLCAMConfig()) -> None:
        super().__init__(encoder, config)
        self.finding_head = nn.Linear(encoder.channels[-1], len(config.cam_findings))

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, box_mask: torch.Tensor | None = None,
                box_findings: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if box_mask is None or box_findings is None:
            raise ValueError("BYOL with a CAM loss needs box_mask and box_findings in every batch")
        byol, features1, pooled1 = self.byol_loss(view1, view2)
        config = self.config
        camloss = cam_loss(features1, self.finding_head(pooled1), box_mask, box_findings, config.cam_resolution,
                           config.cam_relu)
        return {"loss": byol + config.cam_lambda * camloss, "byol_loss": byol.detach(), "cam_loss": camloss.detach()}
