"""Self-supervised pretraining: SimCLR (papers 001, 002), BYOL and BYOL + CAM loss (paper 000)."""

from cxrlens.ssl.base import METHODS, MomentumMethod, SSLMethod, build_method
from cxrlens.ssl.byol import BYOL
from cxrlens.ssl.byol_cam import BYOLCAM
from cxrlens.ssl.pretrain import pretrain
from cxrlens.ssl.simclr import SimCLR

__all__ = ["BYOL", "BYOLCAM", "METHODS", "MomentumMethod", "SSLMethod", "SimCLR", "build_method", "pretrain"]
