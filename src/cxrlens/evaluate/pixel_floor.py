"""The raw-pixel floor beside every classification result.

A model that cannot beat a logistic regression on its inputs' raw pixels has not shown that it
learned anything about the findings. The floor is that regression: each image area-resized
to 32 x 32 (OpenCV), the 1,024 intensities standardised, one class-balanced L2 logistic
regression per finding with C chosen by stratified inner cross-validation on AUROC
(:func:`cxrlens.evaluate.probe.fit_probe`). It is fitted on the model's own training
images (found through the checkpoint's recorded provenance, in whichever prepared cache holds
them; else the scored cache's training split) and scored on exactly the images the model is
scored on; a floor once fitted is kept in the scored cache and reused (:func:`pixel_floor`).
:func:`floor_comparison` gives, per finding and on average, the model's AUROC, the floor's,
and the paired bootstrap difference (both rescored on the same resampled images) with its
95 % CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy
import sklearn

import cxrlens

from cxrlens.checkpoints import DataProvenance
from cxrlens.config import LinearEvalConfig
from cxrlens.data.cache import FLOORS_FOLDER, PreparedCache
from cxrlens.data.labels import match_classes
from cxrlens.data.provenance import image_key, key_hash
from cxrlens.data.splits import label_fraction, patients_of
from cxrlens.evaluate.classification import paired_mean_auroc_difference, per_class_auroc
from cxrlens.evaluate.probe import linear_eval

FLOOR_SIDE = 32
FLOOR_FORMAT = 1
"""Raised whenever the floor's features, fit or report change, so that no floor kept by older code is reused."""
FLOOR_PROBE = LinearEvalConfig(c_grid=(0.0001, 0.001, 0.01, 0.1), folds=3, max_iter=200, solver="liblinear",
                               bootstrap=0, floor=False)
"""The floor's regression: a C grid from strong to weak L2 on standardised pixels, 3 inner folds (C is never chosen
on scored images)."""


@dataclass(frozen=True)
class Labelled:
    """Raw-pixel features with labels and known-label masks in a given order of findings."""

    features: np.ndarray
    labels: np.ndarray
    masks: np.ndarray


def pixel_features(cache: PreparedCache, indices: Sequence[int], side: int = FLOOR_SIDE) -> np.ndarray:
    """The cache images ``indices`` area-resized to ``side`` x ``side``, flattened to [0, 1] floats (N x side²)."""
    rows = [cv2.resize(np.asarray(cache.images[int(i)]), (side, side), interpolation=cv2.INTER_AREA) for i in indices]
    if not rows:
        return np.zeros((0, side * side), np.float32)
    return np.stack(rows).reshape(len(rows), -1).astype(np.float32) / 255.0


def labelled(parts: Sequence[tuple[PreparedCache, np.ndarray]], names: Sequence[str]) -> Labelled:
    """Features, labels and masks of the images of each (cache, indices), columns in the order of the canonical
    finding ``names`` (a finding a cache does not label is unknown there)."""
    features = [pixel_features(cache, np.asarray(indices, dtype=np.int64)) for cache, indices in parts]
    return Labelled(np.concatenate(features), *known_labels(parts, names))


def known_labels(parts: Sequence[tuple[PreparedCache, np.ndarray]], names: Sequence[str]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The labels and known-label masks of :func:`labelled`, without reading any pixels."""
    labels, masks = [], []
    for cache, indices in parts:
        columns = {name: column for name, _, column in match_classes(names, cache.classes).pairs}
        rows = np.asarray(indices, dtype=np.int64)
        label = np.zeros((len(rows), len(names)), np.float32)
        mask = np.zeros((len(rows), len(names)), bool)
        for position, name in enumerate(names):
            if name in columns:
                label[:, position] = cache.labels[rows, columns[name]]
                mask[:, position] = cache.masks[rows, columns[name]]
        labels.append(label)
        masks.append(mask)
    return np.concatenate(labels), np.concatenate(masks)


def training_images(provenance: Sequence[DataProvenance], cache: PreparedCache, fallback: np.ndarray,
                    scored: np.ndarray, limit: int | None = None, seed: int = 0
                    ) -> tuple[list[tuple[PreparedCache, np.ndarray]], str]:
    """The model's own training images (its recorded ``train`` role, found by their hashed ids in ``cache`` and in
    every other prepared cache its provenance names), else ``fallback`` of ``cache`` (its training split); never an
    image of a ``scored`` patient of ``cache``; at most ``limit`` of them, drawn with ``seed``; with a line saying
    which."""
    parts, source = _training_images(provenance, cache, fallback, scored)
    total = sum(len(indices) for _, indices in parts)
    if limit is None or total <= limit:
        return parts, source
    keep = np.zeros(total, bool)
    keep[np.random.default_rng(seed).choice(total, size=limit, replace=False)] = True
    bounds = np.cumsum([0, *(len(indices) for _, indices in parts)])
    drawn = [(part, indices[keep[start:end]]) for (part, indices), start, end in zip(parts, bounds, bounds[1:])]
    return drawn, f"{source}, {limit} of them drawn"


def _training_images(provenance: Sequence[DataProvenance], cache: PreparedCache, fallback: np.ndarray,
                     scored: np.ndarray) -> tuple[list[tuple[PreparedCache, np.ndarray]], str]:
    items = cache.items()
    scored_patients = {items[int(i)].patient for i in scored}
    unscored = np.array([i for i in cache.ready_indices() if items[int(i)].patient not in scored_patients],
                        dtype=np.int64)
    recorded = {key for entry in provenance for key in entry.images.get("train", ())}
    parts = []
    for source in _caches(provenance, cache):
        pool = unscored if source is cache else source.ready_indices()
        source_items = source.items()
        found = np.array([i for i in pool if key_hash(image_key(source_items[int(i)])) in recorded], dtype=np.int64)
        if len(found):
            parts.append((source, found))
    if parts:
        found = sum(len(indices) for _, indices in parts)
        return parts, f"{found} of the model's {len(recorded)} recorded training images (its provenance)"
    rest = np.intersect1d(np.asarray(fallback, dtype=np.int64), unscored)
    if len(rest):
        return [(cache, rest)], (f"the {len(rest)} images of this cache's training split (none of the model's own "
                                 "training images is at hand)")
    return [], "no training images at hand (none of the model's is in a prepared cache here, and this split has none)"


def _caches(provenance: Sequence[DataProvenance], cache: PreparedCache) -> list[PreparedCache]:
    """``cache`` and every other prepared cache the provenance names that still opens."""
    found, seen = [cache], {cache.directory.resolve()}
    for entry in provenance:
        directory = Path(entry.cache)
        if not entry.images.get("train") or directory.resolve() in seen or not (directory / "index.json").is_file():
            continue
        seen.add(directory.resolve())
        try:
            found.append(PreparedCache(directory))
        except (OSError, ValueError, RuntimeError):  # moved, damaged or an older format: its images are not at hand
            continue
    return found


def pixel_floor(train: Sequence[tuple[PreparedCache, np.ndarray]], scored: tuple[PreparedCache, np.ndarray],
                names: Sequence[str], seed: int = 0) -> tuple[dict[str, dict], np.ndarray, bool]:
    """The floor fitted on the ``train`` images and scored on the ``scored`` ones: per finding ``{"C",
    "train_images", ...}`` or ``{"skipped": why}``, its probabilities (N_scored x K, NaN where unscored), and whether
    they were reused.

    A floor depends only on its images, findings and seed, and an experiment scores several models trained on the
    same images on the same test images; so each floor is kept in the scored cache's ``floors/`` folder under a
    digest of all of them (the caches' fingerprints, the image indices, the findings, the seed, the floor's settings
    and format, and the versions of cxrlens, scikit-learn, numpy and scipy) and reused: the same numbers, fitted once."""
    path = scored[0].directory / FLOORS_FOLDER / f"{_floor_digest(train, scored, names, seed)}.npz"
    stored = _read_floor(path)
    if stored is not None:
        return *stored, True
    fitted, scores = linear_eval(*_arrays(labelled(train, names)), *_arrays(labelled([scored], names)), names,
                                 FLOOR_PROBE.model_copy(update={"seed": seed}))
    _write_floor(path, fitted, scores)
    return fitted, scores, False


def _arrays(images: Labelled) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return images.features, images.labels, images.masks


def _floor_digest(train: Sequence[tuple[PreparedCache, np.ndarray]], scored: tuple[PreparedCache, np.ndarray],
                  names: Sequence[str], seed: int) -> str:
    def images(part: tuple[PreparedCache, np.ndarray]) -> list[str]:
        indices = np.ascontiguousarray(part[1], dtype=np.int64)
        return [part[0].index["fingerprint"], hashlib.sha256(indices.tobytes()).hexdigest()]

    settings = {"format": FLOOR_FORMAT, "side": FLOOR_SIDE, "probe": FLOOR_PROBE.model_dump(mode="json"),
                "versions": [cxrlens.__version__, sklearn.__version__, np.__version__, scipy.__version__],
                "seed": seed, "names": list(names), "train": [images(part) for part in train], "scored": images(scored)}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]


def _read_floor(path: Path) -> tuple[dict[str, dict], np.ndarray] | None:
    """A stored floor, or None where there is none; one that cannot be read (truncated by a crash) is removed and
    fitted again."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as stored:
            return json.loads(str(stored["fits"])), stored["scores"]
    except Exception:  # noqa: BLE001 - a damaged npz raises BadZipFile, EOFError, ValueError, KeyError ...
        path.unlink(missing_ok=True)
        return None


def _write_floor(path: Path, fitted: dict[str, dict], scores: np.ndarray) -> None:
    """Keep a fitted floor (written whole or not at all; a read-only cache just keeps none)."""
    try:
        path.parent.mkdir(exist_ok=True)
        handle, partial = tempfile.mkstemp(suffix=".npz", prefix=f".{path.stem}.", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, fits=json.dumps(fitted), scores=scores)
        os.replace(partial, path)
    except OSError:
        Path(partial).unlink(missing_ok=True)


def floor_comparison(labels: np.ndarray, masks: np.ndarray, model: np.ndarray, floor: np.ndarray,
                     names: Sequence[str], resamples: int = 1000, seed: int = 0,
                     patients: np.ndarray | None = None, baseline: str = "floor") -> dict:
    """Per finding and on average (over the findings both score): model AUROC, floor AUROC, and model - floor with
    a paired bootstrap 95 % CI (resampling whole ``patients`` when given). ``floor`` may be any baseline's scores on
    the same images; ``baseline`` names its entries (e.g. ``random_init``)."""
    masks = masks.astype(bool) & np.isfinite(floor) & np.isfinite(model)
    model_auc = per_class_auroc(np.nan_to_num(model), labels, masks)
    floor_auc = per_class_auroc(np.nan_to_num(floor), labels, masks)
    used = [column for column in range(len(names)) if np.isfinite(model_auc[column]) and np.isfinite(floor_auc[column])]
    findings = {names[column]: {
        "model": float(model_auc[column]), baseline: float(floor_auc[column]),
        "difference": paired_mean_auroc_difference(labels[:, [column]], masks[:, [column]], model[:, [column]],
                                                   floor[:, [column]], resamples, seed, patients)} for column in used}
    if not used:
        return {"findings": {}, "mean": None}
    return {"findings": findings, "mean": {
        "model": float(np.mean(model_auc[used])), baseline: float(np.mean(floor_auc[used])),
        "difference": paired_mean_auroc_difference(labels[:, used], masks[:, used], model[:, used], floor[:, used],
                                                   resamples, seed, patients)}}


def fraction_floors(cache: PreparedCache, train: np.ndarray, test: np.ndarray, probe_scores: dict[str, np.ndarray],
                    config: LinearEvalConfig) -> dict[str, dict]:
    """Linear evaluation's floor: per label fraction, the floor fitted on the same labelled training images as the
    probe (the same nested, stratified draw; at most ``config.floor_max_images`` of them) and compared with the
    probe's test scores (``probe_scores`` by fraction key, N_test x K), resampling whole patients."""
    names, items = list(cache.classes), cache.items()
    labels, masks = known_labels([(cache, test)], names)
    patients = patients_of(items, test)
    rng = np.random.default_rng(config.seed)
    floors = {}
    for fraction in config.fractions:
        key = f"{fraction:g}"
        chosen = label_fraction(items, train, fraction, seed=config.seed)
        if len(chosen) > config.floor_max_images:
            chosen = np.sort(rng.choice(chosen, size=config.floor_max_images, replace=False))
        _, floor_scores, _ = pixel_floor([(cache, chosen)], (cache, test), names, config.seed)
        floors[key] = {"train_images": int(len(chosen)), **floor_comparison(
            labels, masks, probe_scores[key], floor_scores, names, config.bootstrap, config.seed, patients)}
    return floors
