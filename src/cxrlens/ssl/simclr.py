"""SimCLR (papers 001, 002): encoder -> GAP -> projection head -> NT-Xent.

Projection heads (lightly's ``ProjectionHead`` blocks):

* ``"bn"`` - paper 002 Table I: Dense 2048 (bias) + BatchNorm + ReLU, Dense 128 without
  bias. (lightly's ``SimCLRProjectionHead`` differs: no first bias, BN on the output.)
* ``"mlp"`` - paper 001: two fully connected layers with a ReLU between.

The loss is lightly's ``NTXentLoss`` (paper 002 eq. 4; temperature 0.5 in 002, 0.1 in
001). With ``gather_distributed`` the negatives come from every DDP rank through a
gather that passes gradients back, so N processes with batch B optimise exactly the
loss of one process with batch N*B.
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import ProjectionHead
from torch import nn

from cxrlens.config import SimCLRConfig
from cxrlens.models.backbones import Backbone
from cxrlens.ssl.base import METHODS, SSLMethod


def simclr_projection_head(kind: str, input_dim: int, hidden: int = 2048, output: int = 128) -> ProjectionHead:
    """Paper 002 Table I (``"bn"``) or paper 001's two-layer MLP (``"mlp"``)."""
    if kind == "bn":
        return ProjectionHead([(input_dim, hidden, nn.BatchNorm1d(hidden), nn.ReLU(), True),
                               (hidden, output, None, None, False)])
    if kind == "mlp":
        return ProjectionHead([(input_dim, hidden, None, nn.ReLU(), True), (hidden, output, None, None, True)])
    raise ValueError(f"projection must be 'bn' (paper 002) or 'mlp' (paper 001), not {kind!r}")


@METHODS.register("simclr")
class SimCLR(SSLMethod):
    """Two views through a shared encoder and head; ``forward`` returns ``{"loss": NT-Xent}``."""

    def __init__(self, encoder: Backbone, config: SimCLRConfig = SimCLRConfig()) -> None:
        super().__init__(encoder, config)
        self.projector = simclr_projection_head(config.projection, encoder.channels[-1], config.projection_hidden,
                                                config.projection_dim)
        self.criterion = NTXentLoss(temperature=config.temperature, gather_distributed=config.gather_distributed)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, box_mask: torch.Tensor | None = None,
                box_findings: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        z1 = self.projector(self.embed(view1))
        z2 = self.projector(self.embed(view2))
        return {"loss": self.criterion(z1.float(), z2.float())}
