"""Models back out of checkpoints: a trained classifier (with its PCM, if refined), or an encoder.

Everything a model needs at inference time - architecture, classes, input geometry,
normalisation - comes from the checkpoint (:mod:`cxrlens.checkpoints`), never from a
second source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import nn

from cxrlens.checkpoints import (CheckpointError, ClassifierCheckpoint, EncoderCheckpoint, RefinedCheckpoint,
                                 load_checkpoint)
from cxrlens.config import Normalisation
from cxrlens.data.cache import PreparedCache
from cxrlens.models.architectures import build_model
from cxrlens.models.backbones import Backbone
from cxrlens.models.pcm import PixelCorrelationModule


@dataclass(frozen=True)
class LoadedClassifier:
    """A trained classifier in eval mode, its checkpoint (classes, input, normalisation, ...) and its PCM (or None)."""

    model: nn.Module
    checkpoint: ClassifierCheckpoint
    refiner: PixelCorrelationModule | None

    @property
    def classes(self) -> list[str]:
        return self.checkpoint.classes

    @property
    def normalisation(self) -> Normalisation:
        return self.checkpoint.normalisation


def load_classifier(path: str | os.PathLike) -> LoadedClassifier:
    """``best.ckpt`` of train-supervised / finetune, or ``refined.ckpt`` of refine, ready to predict."""
    checkpoint = load_checkpoint(path, ClassifierCheckpoint)
    if len(checkpoint.classes) != checkpoint.network.num_classes:
        raise CheckpointError(f"{path}: names {len(checkpoint.classes)} classes for a head of "
                              f"{checkpoint.network.num_classes} outputs; the checkpoint is inconsistent")
    model = build_model(checkpoint.network.model_copy(update={"encoder": None, "weights": None}))
    _load_state(model, checkpoint.state, path, "weights do not fit its own model config")
    refiner = None
    if isinstance(checkpoint, RefinedCheckpoint):
        refiner = PixelCorrelationModule(checkpoint.pcm.in_channels, checkpoint.pcm.embed_channels, checkpoint.pcm.nms)
        _load_state(refiner, checkpoint.pcm_state, path, "PCM weights do not fit")
        refiner.eval()
    return LoadedClassifier(model.eval(), checkpoint, refiner)


def check_input(loaded: LoadedClassifier, cache: PreparedCache, checkpoint: str | os.PathLike) -> None:
    """ValueError unless ``cache`` holds images as the classifier was trained on them (side and fit)."""
    wanted = loaded.checkpoint.input
    if (cache.size, cache.fit) != (wanted.size, wanted.fit):
        raise ValueError(f"{cache.directory}: images are {cache.size} px ({cache.fit}) but {checkpoint} was trained on "
                         f"{wanted.size} px ({wanted.fit}); prepare a cache with --size {wanted.size} --fit {wanted.fit}")


def load_encoder(path: str | os.PathLike) -> tuple[Backbone, EncoderCheckpoint]:
    """The pretrained encoder of ``encoder.ckpt`` (or an ``epoch-NNNN.ckpt`` snapshot) and its checkpoint."""
    checkpoint = load_checkpoint(path, EncoderCheckpoint)
    encoder = Backbone(checkpoint.encoder.backbone, in_chans=checkpoint.encoder.in_chans)
    _load_state(encoder, checkpoint.state, path, "encoder weights do not fit its backbone")
    return encoder, checkpoint


def _load_state(module: nn.Module, state: dict, path: str | os.PathLike, problem: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: {problem} ({str(error).splitlines()[0]})") from error
