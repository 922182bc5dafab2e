"""Which images of a dataset play which part in a step, drawn in one place.

Training, pretraining, SEAM refinement, evaluation and linear evaluation all take their
images from these functions, and so does ``cxrlens run --check`` before anything runs:
the check predicts exactly the images a run will use, from the dataset's file lists alone.

Roles (the keys of the returned dicts, recorded in every checkpoint's provenance):
``train`` and ``val`` (supervised training), ``refine`` (SEAM), ``pretrain`` (pixels only)
and ``cam-loss`` (the boxed images whose radiologist boxes trained paper 000's CAM loss).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from cxrlens.config import EvaluateConfig, LinearEvalConfig, PretrainConfig, SplitChoice, SplitConfig
from cxrlens.data.labels import canonical
from cxrlens.data.records import CXRItem, boxed_positions
from cxrlens.data.splits import Splits, keep_no_finding, label_fraction, split_by_patient

DEFAULT_SPLIT = SplitConfig()
log = logging.getLogger(__name__)


def draw_splits(items: Sequence[CXRItem], choice: SplitChoice, val_fraction: float, test_fraction: float,
                seed: int) -> Splits:
    """:func:`split_by_patient` under ``choice`` (how the official lists are used), after one warning line when the
    splits keep patients the official lists share or had to drop or move images."""
    splits = split_by_patient(items, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                              mode=choice.splits, drop_shared=choice.drop_shared)
    line = splits.warning(items)
    if line:
        log.warning(line)
    return splits


def with_cam_loss(roles: dict[str, np.ndarray], items: Sequence[CXRItem], findings: Sequence[str]
                  ) -> dict[str, np.ndarray]:
    """``roles`` plus ``cam-loss``: the training images whose boxes of ``findings`` a CAM loss trains on (paper 000)."""
    train = np.asarray(roles["train"], dtype=np.int64)
    return {**roles, "cam-loss": train[boxed_positions(items, train, findings)]}


def training_roles(items: Sequence[CXRItem], classes: Sequence[str], ready: np.ndarray, split: SplitConfig,
                   fraction: float = 1.0, seed: int = 0) -> dict[str, np.ndarray]:
    """``train`` and ``val`` of a supervised run: the split's training part (paper 003: only ``no_finding_images``
    of its healthy images), ``val_fraction`` of its patients for validation, ``fraction`` of the rest (stratified)."""
    splits = _splits(items, classes, split, seed)
    train = label_fraction(items, splits.train, fraction, seed=seed)
    return {"train": np.intersect1d(train, ready), "val": np.intersect1d(splits.val, ready)}


def refine_roles(items: Sequence[CXRItem], classes: Sequence[str], ready: np.ndarray, split: SplitConfig,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """``refine``: the whole training part of the split (the classifier's train + val, paper 003's healthy subset
    included), which SEAM trains the PCM on."""
    splits = _splits(items, classes, split, seed)
    return {"refine": np.intersect1d(np.union1d(splits.train, splits.val), ready)}


def _splits(items: Sequence[CXRItem], classes: Sequence[str], split: SplitConfig, seed: int) -> Splits:
    splits = draw_splits(items, split, split.val_fraction, split.test_fraction, seed)
    if split.no_finding_images is None:
        return splits
    kept = keep_no_finding(items, classes, np.concatenate([splits.train, splits.val]), split.no_finding_images, seed)
    return replace(splits, train=np.intersect1d(splits.train, kept), val=np.intersect1d(splits.val, kept))


def held_out_box_patients(items: Sequence[CXRItem], fraction: float, seed: int = 0) -> set[str]:
    """The boxed patients (:attr:`CXRItem.patient`) that pretraining leaves out: about ``fraction`` of them (paper
    000: 20 %). Whether a patient is held out depends only on the patient and ``seed`` (a hash), not on which other
    images are around, so pretraining on several datasets and evaluating one of them agree on every patient."""
    if fraction <= 0:
        return set()
    return {item.patient for item in items if item.boxes and _unit(f"{seed}:{item.patient}") < fraction}


def _unit(text: str) -> float:
    """A number in [0, 1) fixed by ``text`` (the first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def pretrain_roles(parts: Sequence[tuple[Sequence[CXRItem], np.ndarray]], config: PretrainConfig
                   ) -> list[dict[str, np.ndarray]]:
    """Per dataset (items, ready indices): ``pretrain`` (the images pretraining sees) and ``cam-loss`` (those of them
    whose boxes the method reads). The held-out boxed patients are left out of every one of the datasets; one
    generator draws every dataset's ``fraction`` in turn."""
    seed, findings = config.train.seed, set(config.method.box_findings())
    generator = np.random.default_rng(seed)
    held = held_out_box_patients([item for items, _ in parts for item in items], config.box_test_fraction, seed)
    roles = []
    for items, ready in parts:
        pool = np.asarray(ready, dtype=np.int64)
        if config.images == "train":
            splits = draw_splits(items, config, 0.0, DEFAULT_SPLIT.test_fraction, seed)
            boxed = [i for i in pool if items[int(i)].boxes]
            pool = np.union1d(np.intersect1d(splits.train, pool), np.asarray(boxed, dtype=np.int64))
        pool = np.array([i for i in pool if items[int(i)].patient not in held], dtype=np.int64)
        if config.fraction < 1 and len(pool):
            keep = max(1, round(config.fraction * len(pool)))
            pool = np.sort(generator.choice(pool, size=keep, replace=False))
        cam = [i for i in pool if findings and any(canonical(box.finding) in findings for box in items[int(i)].boxes)]
        roles.append({"pretrain": pool, **({"cam-loss": np.asarray(cam, dtype=np.int64)} if cam else {})})
    return roles


class Evaluated(NamedTuple):
    """What an evaluation scores, the training part whose boxes build the location prior, and the splits drawn
    (None for ``split: all``)."""

    scored: np.ndarray
    train: np.ndarray
    splits: Splits | None


def evaluated_indices(items: Sequence[CXRItem], ready: np.ndarray, config: EvaluateConfig) -> Evaluated:
    """The images an evaluation scores and the training part (see :class:`Evaluated`).

    The split is drawn as training draws it (same ``splits`` mode; where a test split is drawn, the same
    ``test_fraction`` and ``seed`` give the same patients); with ``box_test_fraction`` every image of the boxed
    patients outside the held-out draw is left out.
    """
    splits = None
    if config.split == "all":
        scored, train = np.asarray(ready, dtype=np.int64), np.array([], dtype=np.int64)
    else:
        splits = draw_splits(items, config, DEFAULT_SPLIT.val_fraction, config.test_fraction, config.seed).keep(ready)
        scored, train = splits.as_dict()[config.split], splits.train
    if config.box_test_fraction is not None:
        held = held_out_box_patients(items, config.box_test_fraction, config.seed)
        trained = {item.patient for item in items if item.boxes} - held
        scored = np.array([i for i in scored if items[int(i)].patient not in trained], dtype=np.int64)
    return Evaluated(scored, train, splits)


def linear_eval_splits(items: Sequence[CXRItem], ready: np.ndarray, config: LinearEvalConfig) -> Splits:
    """Linear evaluation's train / test patients (the ``splits`` mode's test set; no validation: C is picked by
    k-fold)."""
    return draw_splits(items, config, 0.0, config.test_fraction, config.seed).keep(ready)
