"""Fine-tuning a self-supervised encoder with labels (papers 000 and 001).

The classifier is built around the pretrained encoder (its backbone name and input
channels are taken from the checkpoint) with paper 000's linear multi-label head or
paper 001's two-FC binary head (``ModelConfig.head = "mlp"``), and trained by the
supervised engine. Freeze policies: ``none`` (everything trains), ``last-blocks`` (only
stages 3-4 and the head, as paper 003 trains), ``all`` (the head alone).
"""

from __future__ import annotations

from pathlib import Path

from cxrlens.config import ModelConfig, TrainConfig
from cxrlens.models.pretrained import load_encoder_state
from cxrlens.train.supervised import train_supervised

FREEZE_POLICIES: dict[str, int] = {"none": 0, "last-blocks": 3, "all": 5}


def finetune(cache_dir: str | Path, run_dir: str | Path, encoder: str | Path, model_config: ModelConfig,
             train_config: TrainConfig, freeze: str = "none", **options: object) -> dict:
    """Train a classifier initialised from ``encoder`` on ``cache_dir``; options as :func:`train_supervised`."""
    if freeze not in FREEZE_POLICIES:
        raise ValueError(f"freeze must be one of {', '.join(FREEZE_POLICIES)}, not {freeze!r}")
    encoder_config, _ = load_encoder_state(encoder)
    model_config = model_config.model_copy(update={
        "encoder": str(encoder), "backbone": encoder_config.backbone, "in_chans": encoder_config.in_chans,
        "weights": None, "trainable_from": FREEZE_POLICIES[freeze]})
    return train_supervised(cache_dir, run_dir, model_config, train_config, **options)
