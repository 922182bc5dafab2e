"""Read a self-supervised encoder back out of a pretraining checkpoint (for fine-tuning,
linear evaluation and t-SNE)."""

from __future__ import annotations

import os

import torch

from cxrlens.config import ModelConfig
from cxrlens.models.backbones import Backbone
from cxrlens.train.checkpoint import CheckpointError, load_checkpoint

ENCODER_PREFIX = "encoder."


def load_encoder_state(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The encoder's config and ``Backbone`` state dict from ``encoder.ckpt``, ``last.ckpt``
    or an ``epoch-NNNN.ckpt`` snapshot of a ``cxrlens pretrain`` run."""
    checkpoint = load_checkpoint(path)
    if checkpoint.get("kind") != "pretrain" or "encoder_config" not in checkpoint:
        raise CheckpointError(f"{path}: not a cxrlens pretraining checkpoint (no encoder in it)")
    config = ModelConfig.model_validate(checkpoint["encoder_config"])
    if "encoder" in checkpoint:
        return config, checkpoint["encoder"]
    state = {key[len(ENCODER_PREFIX):]: value for key, value in checkpoint["model"].items()
             if key.startswith(ENCODER_PREFIX)}
    return config, state


def build_encoder(path: str | os.PathLike | None, backbone: str = "resnet50", in_chans: int = 1) -> Backbone:
    """The pretrained encoder in ``path``, or (``None``) a random-init ``backbone`` as a baseline."""
    if path is None:
        return Backbone(backbone, in_chans=in_chans)
    config, state = load_encoder_state(path)
    encoder = Backbone(config.backbone, in_chans=config.in_chans)
    encoder.load_state_dict(state)
    return encoder
