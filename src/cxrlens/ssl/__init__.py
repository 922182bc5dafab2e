"""Self-supervised pretraining: SimCLR (papers 001, 002), BYOL and BYOL + CAM loss (paper 000)."""

from cxrlens.ssl.byol import BYOL
from cxrlens.ssl.cam_loss import cam_loss
from cxrlens.ssl.pretrain import pretrain
from cxrlens.ssl.simclr import SimCLR

__all__ = ["BYOL", "SimCLR", "cam_loss", "pretrain"]
