"""BYOL (paper 000, Grill et al.).

Online network: encoder ``f``, projector ``g`` and predictor ``q`` (lightly's BYOL heads,
hidden 512, output 256 as in paper 000). Target: an exponential moving average of
encoder and projector, ``delta <- tau delta + (1 - tau) theta`` with tau = 0.99,
optionally raised to 1 on a cosine schedule. The loss is eq. 3,
``2 - 2 cos(q(z), sg(z'))``, symmetrised by swapping the views, and the two directions
are **summed** (eq. 8's ``L + L~``; averaging them halves the gradient and is a known
accuracy bug elsewhere).
"""

from __future__ import annotations

import copy

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from cxrlens.config import BYOLConfig
from cxrlens.models.backbones import Backbone
from cxrlens.ssl.base import METHODS, MomentumMethod


@METHODS.register("byol")
class BYOL(MomentumMethod):
    """``forward(view1, view2)`` -> ``{"loss", "byol_loss"}``."""

    config: BYOLConfig

    def __init__(self, encoder: Backbone, config: BYOLConfig = BYOLConfig()) -> None:
        super().__init__(encoder, config)
        self.projector = BYOLProjectionHead(encoder.channels[-1], config.hidden, config.dim)
        self.predictor = BYOLPredictionHead(config.dim, config.hidden, config.dim)
        self.target_encoder = copy.deepcopy(encoder)
        self.target_projector = copy.deepcopy(self.projector)
        deactivate_requires_grad(self.target_encoder)
        deactivate_requires_grad(self.target_projector)
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

    def byol_loss(self, view1: torch.Tensor, view2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eq. 3 summed over both directions, and view 1's online feature map and pooled features."""
        features1, pooled1, prediction1 = self._online(view1)
        _, _, prediction2 = self._online(view2)
        target1, target2 = self._target(view1), self._target(view2)
        loss = self.regression_loss(prediction1, target2) + self.regression_loss(prediction2, target1)
        return loss, features1, pooled1

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, box_mask: torch.Tensor | None = None,
                box_findings: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        loss, _, _ = self.byol_loss(view1, view2)
        return {"loss": loss, "byol_loss": loss.detach()}

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.target_encoder), (self.projector, self.target_projector)]

    def momentum(self, step: int, total_steps: int) -> float:
        """tau at optimizer step ``step``: constant, or cosine from tau to 1 (BYOL)."""
        if self.config.tau_schedule == "cosine":
            return cosine_schedule(step, max(total_steps, 1), self.config.tau, 1.0)
        return self.config.tau
