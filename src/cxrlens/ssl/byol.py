"""BYOL (paper 000, Grill et al.) with the optional CAM loss of paper 000 eq. 6-8.

Online network: encoder ``f``, projector ``g`` and predictor ``q`` (lightly's BYOL heads,
hidden 512, output 256 as in paper 000). Target: an exponential moving average of
encoder and projector, ``delta <- tau delta + (1 - tau) theta`` with tau = 0.99,
optionally raised to 1 on a cosine schedule. The loss is eq. 3,
``2 - 2 cos(q(z), sg(z'))``, symmetrised by swapping the views, and the two directions
are **summed** (eq. 8's ``L + L~``; averaging them halves the gradient and is a known
accuracy bug elsewhere). With a finding head, eq. 8 adds ``lambda * L_CAM``
(:mod:`cxrlens.ssl.cam_loss`) on the first view's online feature map.
"""

from __future__ import annotations

import copy

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from cxrlens.models.backbones import Backbone
from cxrlens.ssl.cam_loss import cam_loss


class BYOL(nn.Module):
    """``forward(view1, view2[, box_mask, box_findings])`` -> ``{"loss", "byol_loss"[, "cam_loss"]}``."""

    def __init__(self, encoder: Backbone, hidden: int = 512, output: int = 256, tau: float = 0.99,
                 tau_schedule: str = "constant", cam_findings: int = 0, cam_lambda: float = 2.0,
                 cam_resolution: str = "feature", cam_relu: bool = False) -> None:
        super().__init__()
        channels = encoder.channels[-1]
        self.encoder = encoder
        self.projector = BYOLProjectionHead(channels, hidden, output)
        self.predictor = BYOLPredictionHead(output, hidden, output)
        self.target_encoder = copy.deepcopy(encoder)
        self.target_projector = copy.deepcopy(self.projector)
        deactivate_requires_grad(self.target_encoder)
        deactivate_requires_grad(self.target_projector)
        self.finding_head = nn.Linear(channels, cam_findings) if cam_findings else None
        self.tau = tau
        self.tau_schedule = tau_schedule
        self.cam_lambda = cam_lambda
        self.cam_resolution = cam_resolution
        self.cam_relu = cam_relu
        self.similarity = NegativeCosineSimilarity()

    def _online(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.encoder(images)[-1]
        pooled = features.mean(dim=(2, 3))
        return features, pooled, self.predictor(self.projector(pooled))

    @torch.no_grad()
    def _target(self, images: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.target_encoder(images)[-1].mean(dim=(2, 3)))

    def regression_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Eq. 3 averaged over the batch: ``2 - 2 cos(q, sg(z'))``."""
        return 2 + 2 * self.similarity(prediction.float(), target.detach().float())

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, box_mask: torch.Tensor | None = None,
                box_findings: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        features1, pooled1, prediction1 = self._online(view1)
        _, _, prediction2 = self._online(view2)
        target1, target2 = self._target(view1), self._target(view2)
        byol = self.regression_loss(prediction1, target2) + self.regression_loss(prediction2, target1)
        terms = {"loss": byol, "byol_loss": byol.detach()}
        if self.finding_head is not None:
            if box_mask is None or box_findings is None:
                raise ValueError("BYOL with a CAM loss needs box_mask and box_findings in every batch")
            scores = self.finding_head(pooled1)
            camloss = cam_loss(features1, scores, box_mask, box_findings, self.cam_resolution, self.cam_relu)
            terms["loss"] = byol + self.cam_lambda * camloss
            terms["cam_loss"] = camloss.detach()
        return terms

    def momentum(self, step: int, total_steps: int) -> float:
        """tau at optimizer step ``step``: constant, or cosine from tau to 1 (BYOL)."""
        if self.tau_schedule == "cosine":
            return cosine_schedule(step, max(total_steps, 1), self.tau, 1.0)
        return self.tau

    @torch.no_grad()
    def update_target(self, step: int, total_steps: int) -> None:
        """``delta <- tau delta + (1 - tau) theta`` for encoder and projector."""
        tau = self.momentum(step, total_steps)
        update_momentum(self.encoder, self.target_encoder, m=tau)
        update_momentum(self.projector, self.target_projector, m=tau)
