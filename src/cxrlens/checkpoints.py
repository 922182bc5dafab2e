"""The one checkpoint writer and reader, and the typed schemas of what a checkpoint holds.

Every ``.ckpt`` cxrlens writes is a dict of four kinds of entry::

    {"format": "cxrlens-checkpoint", "version": 3, "kind": "classifier" | "refined" | "encoder" | "training-state",
     "meta": "<JSON of the schema's fields>", <tensor fields>: {name: Tensor, ...}}

written atomically (temporary file + rename: a crash leaves the old file or the new one)
and read back with ``torch.load(weights_only=True)``, so loading a checkpoint never
executes code. The JSON ``meta`` is validated into the schema's pydantic model; a file
that is not a cxrlens checkpoint, one of an older or newer format, or one of another kind
than the caller needs gets one :class:`CheckpointError` naming the file and what to do.

Schemas:

* :class:`ClassifierCheckpoint` - ``best.ckpt`` of ``train-supervised`` / ``finetune``: the
  network config, class names, input geometry, normalisation, the epoch and validation
  metrics, and where its training and validation images came from (:class:`DataProvenance`);
* :class:`RefinedCheckpoint` - ``refined.ckpt`` of ``refine``: a classifier plus its PCM;
* :class:`EncoderCheckpoint` - ``encoder.ckpt`` and ``epoch-NNNN.ckpt`` of ``pretrain``;
* :class:`TrainingState` - ``last.ckpt`` of every training run, for ``--resume``.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cxrlens.config import InputSpec, ModelConfig, Normalisation, Strict

FORMAT = "cxrlens-checkpoint"
VERSION = 3

C = TypeVar("C", bound="Checkpoint")


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or does not hold what is expected."""


class DataProvenance(Strict):
    """Which images of which prepared cache a model was trained (and validated) on.

    Image and patient identifiers are stored as sorted 16-hex-digit SHA-256 prefixes, one
    list per role (``train``, ``val``, ``pretrain``, ...), so an evaluation can tell whether
    it scores images or patients a model has seen without the checkpoint carrying names.
    """

    cache: str = Field(description="the prepared cache folder, as given")
    dataset: str = Field(description="the dataset the cache was prepared from")
    fingerprint: str = Field(description="the cache's fingerprint (images, labels, size, fit)")
    split: dict[str, str | float | int | bool | None] = Field(
        default_factory=dict, description="how the roles were drawn (official lists, seed, fractions)")
    images: dict[str, list[str]] = Field(default_factory=dict, description="role -> hashed image ids")
    patients: dict[str, list[str]] = Field(default_factory=dict, description="role -> hashed patient ids")
    pseudonym_keys: list[str] = Field(default_factory=list, description="ids of the keys that pseudonymised DICOM "
                                      "PatientIDs among these images (cxrlens.paths.pseudonym_key_id)")


class Checkpoint(BaseModel):
    """Fields every checkpoint has: ``state`` (a state dict) and the ``epoch`` it was taken after (1-based)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=(),
                              ser_json_inf_nan="constants")  # a NaN metric or the -inf "best" survive the round trip
    kind: ClassVar[str] = ""
    described: ClassVar[str] = ""
    tensor_fields: ClassVar[tuple[str, ...]] = ("state",)

    state: dict[str, Any] = Field(repr=False, description="the module's state dict")
    epoch: int | None = None


class FeatureStatistics(Strict):
    """The training images' pooled CAM features (global average of ``cam_features``), summarised for the
    out-of-distribution check of predict and serve: their mean, top principal axes with variances and the mean
    variance of the rest (a probabilistic PCA), and the score that held-out (validation) images stay under."""

    mean: list[float]
    components: list[list[float]] = Field(description="k x D principal axes")
    variances: list[float] = Field(description="variance along each axis")
    residual_variance: float = Field(gt=0, description="mean variance off the axes")
    threshold: float = Field(description="the held-out images' score percentile")
    percentile: float = Field(description="which percentile (99: 1 % of held-out images score above)")
    images: int = Field(description="training images summarised")
    held_out: int = Field(description="held-out images the threshold was read from")

    def score(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row of ``features`` (N x D) under the summary: along the axes by
        their variances, off them by the residual variance."""
        centred = np.asarray(features, dtype=np.float64) - np.asarray(self.mean)
        axes = np.asarray(self.components)
        projected = centred @ axes.T
        residual = np.maximum((centred ** 2).sum(axis=1) - (projected ** 2).sum(axis=1), 0.0)
        return (projected ** 2 / np.asarray(self.variances)).sum(axis=1) + residual / self.residual_variance


class ClassifierCheckpoint(Checkpoint):
    kind: ClassVar[str] = "classifier"
    described: ClassVar[str] = "a classifier (best.ckpt of train-supervised or finetune)"

    network: ModelConfig
    classes: list[str]
    input: InputSpec
    normalisation: Normalisation
    metrics: dict[str, float] = Field(default_factory=dict, description="validation metrics at this epoch")
    provenance: list[DataProvenance] = Field(default_factory=list)
    thresholds: dict[str, float] = Field(default_factory=dict, description="per class, the operating threshold chosen "
                                         "on the validation split (a class without one uses 0.5)")
    threshold_rule: str = Field("", description="the rule that chose them (TrainConfig.threshold_rule)")
    origin: str = Field("", description="who trained the starting weights when cxrlens did not (TorchXRayVision, "
                        "timm), and on what: images cxrlens cannot check evaluations against")
    feature_statistics: FeatureStatistics | None = Field(None, description="the training images' feature summary "
                                                         "for out-of-distribution warnings (None: not recorded)")

    def threshold(self, name: str) -> float:
        """The operating threshold of class ``name`` (0.5 when none was chosen)."""
        return self.thresholds.get(name, 0.5)


class PCMSpec(Strict):
    """The pixel correlation module of paper 003 eq. 2 (``cxrlens refine``)."""

    in_channels: int = Field(ge=1)
    embed_channels: int = Field(ge=1)
    nms: bool = True


class RefinedCheckpoint(ClassifierCheckpoint):
    kind: ClassVar[str] = "refined"
    described: ClassVar[str] = "a classifier with a PCM (refined.ckpt of refine)"
    tensor_fields: ClassVar[tuple[str, ...]] = ("state", "pcm_state")

    pcm: PCMSpec
    pcm_state: dict[str, Any] = Field(repr=False)


class EncoderCheckpoint(Checkpoint):
    kind: ClassVar[str] = "encoder"
    described: ClassVar[str] = "a pretrained encoder (encoder.ckpt or epoch-NNNN.ckpt of pretrain)"

    method: str = Field(description="the self-supervised method that trained it")
    encoder: ModelConfig
    normalisation: Normalisation
    cam_findings: list[str] = Field(default_factory=list)
    provenance: list[DataProvenance] = Field(default_factory=list)


class TrainingState(Checkpoint):
    kind: ClassVar[str] = "training-state"
    described: ClassVar[str] = "a training state for --resume (last.ckpt)"
    tensor_fields: ClassVar[tuple[str, ...]] = ("state", "optimizer", "scheduler")

    optimizer: dict[str, Any] = Field(repr=False)
    scheduler: dict[str, Any] | None = Field(None, repr=False)
    data: str = Field("", description="digest of the images each role trains on (a resume must train on the same)")
    global_step: int
    best: float
    best_epoch: int
    history: list[dict[str, Any]]


KINDS: dict[str, type[Checkpoint]] = {
    schema.kind: schema for schema in (ClassifierCheckpoint, RefinedCheckpoint, EncoderCheckpoint, TrainingState)
}


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    """Write ``checkpoint`` to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: getattr(checkpoint, name) for name in checkpoint.tensor_fields}
    payload = {"format": FORMAT, "version": VERSION, "kind": checkpoint.kind,
               "meta": checkpoint.model_dump_json(exclude=set(tensors)), **tensors}
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def load_checkpoint(path: str | os.PathLike, expected: type[C] | tuple[type[C], ...] = Checkpoint) -> C:
    """Read a checkpoint and check it is one of the ``expected`` schemas (a clear error otherwise)."""
    path = Path(path)
    payload = _read(path)
    kind = payload.get("kind")
    if not isinstance(payload.get("format"), str) and ("model" in payload or kind in ("pretrain", "seam")):
        raise CheckpointError(f"{path}: written by an older cxrlens (checkpoint format 1){_format_1_gap(payload)}; "
                              f"this cxrlens reads format {VERSION}: " + ("run pretrain again" if kind == "pretrain"
                                                                          else "train or fine-tune again"))
    if payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cxrlens checkpoint")
    if payload.get("version") == 2:
        raise CheckpointError(f"{path}: written by an older cxrlens (checkpoint format 2), whose record of the images "
                              "that trained it cannot tell the boxes of a CAM loss from pixels, nor which split a "
                              f"resumed run used; this cxrlens reads format {VERSION}: "
                              + {"encoder": "run pretrain again", "refined": "run refine again"}.get(str(kind),
                                                                                                  "train again"))
    if payload.get("version") != VERSION or not isinstance(kind, str) or kind not in KINDS:
        raise CheckpointError(f"{path}: checkpoint format {payload.get('version')} / kind {kind!r} is not one this "
                              f"cxrlens reads (format {VERSION}); use the cxrlens version that wrote it")
    schema = KINDS[kind]
    try:
        fields = _renamed_init(json.loads(payload["meta"]))
        checkpoint = schema.model_validate({**fields, **{name: payload[name] for name in schema.tensor_fields}})
    except (KeyError, TypeError, json.JSONDecodeError, ValidationError) as error:
        raise CheckpointError(f"{path}: damaged {kind} checkpoint ({_first_line(error)})") from None
    wanted = expected if isinstance(expected, tuple) else (expected,)
    if not isinstance(checkpoint, wanted):
        needed = " or ".join(schema.described for schema in wanted)
        raise CheckpointError(f"{path}: is {schema.described}; this needs {needed}")
    return checkpoint  # type: ignore[return-value]


def read_published_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in a weights file another library published (TorchXRayVision's are pickled modules, read as
    TorchXRayVision reads them, ``weights_only=False``: load only files from its releases or your own)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - unpickling fails in many ways
        raise CheckpointError(f"{path}: not a readable weights file ({type(error).__name__})") from None
    state = saved.state_dict() if isinstance(saved, torch.nn.Module) else saved
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds {type(saved).__name__}, not a network or its state dict")
    return state


def _renamed_init(fields: dict) -> dict:
    """Format-3 files written before ``ModelConfig.init`` name a pretrained encoder ``encoder``: the same field."""
    for key in ("network", "encoder"):
        network = fields.get(key)
        if isinstance(network, dict) and "encoder" in network:
            fields[key] = {("init" if name == "encoder" else name): value for name, value in network.items()}
    return fields


def _read(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file") from None
    except pickle.UnpicklingError as error:
        if "GLOBAL" in str(error):  # torch's weights-only unpickler met a class or function to import
            raise CheckpointError(f"{path}: refused: it holds Python objects besides tensors and plain values, "
                                  "which could run code when loaded; cxrlens checkpoints hold weights only") from None
        raise CheckpointError(f"{path}: not a readable cxrlens checkpoint (not a PyTorch file, or a damaged one)") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, KeyError) as error:
        raise CheckpointError(f"{path}: not a readable cxrlens checkpoint ({_first_line(error)})") from error
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: not a cxrlens checkpoint")
    return payload


def _format_1_gap(payload: dict) -> str:
    """What a format-1 checkpoint lacks, as a clause."""
    if "model_config" in payload and "input" not in payload:
        return " that records no input size"
    return ", without a record of the images that trained it"


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]
