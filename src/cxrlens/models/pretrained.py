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


def load_classifier(path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """A trained classifier (``best.ckpt`` / ``last.ckpt`` of train-supervised or finetune) in eval mode.

    Returns the model and the checkpoint's metadata: ``classes``, ``model_config``,
    ``normalisation`` (mean/std the model was trained with; 0.5/0.25 if not recorded),
    ``input`` (the training cache's ``size`` and ``fit``; None if not recorded), ``epoch``
    and ``pcm`` (the refinement module of ``cxrlens refine``, or None).
    """
    from cxrlens.models.classifier import build_model  # the factory imports this module

    checkpoint = load_checkpoint(path)
    if "model" not in checkpoint or "model_config" not in checkpoint or "classes" not in checkpoint:
        raise CheckpointError(f"{path}: not a cxrlens classifier checkpoint (needs model, model_config and classes)")
    config = ModelConfig.model_validate({**checkpoint["model_config"], "encoder": None, "weights": None})
    model = build_model(config)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit its own model config ({str(error).splitlines()[0]})") from error
    meta = {"classes": list(checkpoint["classes"]), "model_config": config,
            "normalisation": checkpoint.get("normalisation", {"mean": 0.5, "std": 0.25}),
            "input": checkpoint.get("input"), "epoch": checkpoint.get("epoch"), "pcm": _load_pcm(path, checkpoint)}
    return model.eval(), meta


def recorded_input(path: str | os.PathLike, meta: dict) -> tuple[int, str]:
    """The input side and fit (``squash`` / ``pad``) the classifier was trained at."""
    if not meta.get("input"):
        raise CheckpointError(f"{path}: records no input size (written before cxrlens stored one); "
                              "retrain or fine-tune to get a checkpoint that does")
    return int(meta["input"]["size"]), str(meta["input"]["fit"])


def _load_pcm(path: str | os.PathLike, checkpoint: dict) -> torch.nn.Module | None:
    """The PCM a ``cxrlens refine`` checkpoint carries (paper 003), or None."""
    if "pcm" not in checkpoint:
        return None
    from cxrlens.models.pcm import PixelCorrelationModule

    settings = checkpoint.get("pcm_config", {})
    pcm = PixelCorrelationModule(int(settings.get("in_channels", 0)), int(settings.get("embed_channels", 128)))
    try:
        pcm.load_state_dict(checkpoint["pcm"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: PCM weights do not fit ({str(error).splitlines()[0]})") from error
    pcm.nms = bool(settings.get("nms", True))
    return pcm.eval()
