"""Models back out of checkpoints: a trained classifier (with its PCM, if refined), or an encoder.

Everything a model needs at inference time - architecture, classes, input geometry,
normalisation - comes from the checkpoint (:mod:`cxrlens.checkpoints`), never from a
second source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from torch import nn

from cxrlens.checkpoints import (CheckpointError, ClassifierCheckpoint, EncoderCheckpoint, RefinedCheckpoint,
                                 load_checkpoint)
from cxrlens.config import InputSpec, ModelConfig, Normalisation
from cxrlens.data.cache import PreparedCache
from cxrlens.models.architectures import build_model
from cxrlens.models.backbones import Backbone
from cxrlens.models.inference import inference_model
from cxrlens.models.pcm import PixelCorrelationModule
from cxrlens.models.xrv import XRV_NORMALISATION, published_model


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

    def for_inference(self, device: str | object, compile: bool = False) -> LoadedClassifier:
        """This classifier with its model on ``device`` as predict, evaluate and serve run it
        (:func:`cxrlens.models.inference.inference_model`, ``compile`` passed on); ``self.model`` stays the network
        as trained."""
        return replace(self, model=inference_model(self.model.to(device), self.checkpoint.input.size,
                                                   self.checkpoint.network.in_chans, compile))


def load_classifier(path: str | os.PathLike, weights_file: str | os.PathLike | None = None) -> LoadedClassifier:
    """``best.ckpt`` of train-supervised / finetune, ``refined.ckpt`` of refine, or ``xrv:<name>`` (a published
    TorchXRayVision classifier, from its cache folder or ``weights_file``), ready to predict."""
    if str(path).startswith("xrv:"):
        return xrv_classifier(str(path)[len("xrv:"):], weights_file)
    checkpoint = load_checkpoint(path, ClassifierCheckpoint)
    if len(checkpoint.classes) != checkpoint.network.num_classes:
        raise CheckpointError(f"{path}: names {len(checkpoint.classes)} classes for a head of "
                              f"{checkpoint.network.num_classes} outputs; the checkpoint is inconsistent")
    model = build_model(checkpoint.network.model_copy(update={"init": None, "weights": None}))
    _load_state(model, checkpoint.state, path, "weights do not fit its own model config")
    refiner = None
    if isinstance(checkpoint, RefinedCheckpoint):
        refiner = PixelCorrelationModule(checkpoint.pcm.in_channels, checkpoint.pcm.embed_channels, checkpoint.pcm.nms)
        _load_state(refiner, checkpoint.pcm_state, path, "PCM weights do not fit")
        refiner.eval()
    return LoadedClassifier(model.eval(), checkpoint, refiner)


def xrv_classifier(name: str, weights_file: str | os.PathLike | None = None) -> LoadedClassifier:
    """TorchXRayVision's ``name`` as it was published: its trained outputs only (canonical names), its preprocessing
    (the centre square at its resolution, intensities in [-1024, 1024]) and its operating points as thresholds."""
    published = published_model(name)
    classes = [label for _, label in published.trained()]
    config = ModelConfig(init=f"xrv:{name}", weights=None if weights_file is None else str(weights_file),
                         num_classes=len(classes), pooling="gap")
    checkpoint = ClassifierCheckpoint(
        state={}, network=config, classes=classes, input=InputSpec(size=published.resolution, fit="crop"),
        normalisation=XRV_NORMALISATION, thresholds=published.operating_points(),
        threshold_rule="TorchXRayVision's operating points (op_threshs)", origin=published.origin)
    return LoadedClassifier(build_model(config, classes).eval(), checkpoint, None)


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
