"""Patient-level train / val / test splits and stratified label fractions.

A dataset's official lists are kept as released, or made patient-disjoint, or redrawn
(:data:`SplitMode`). Some releases share patients between their official lists (Kermany's
``personN`` ids recur between ``train/`` and ``test/``): ``official`` keeps them and
:func:`shared_patients` counts them; ``official-disjoint`` (the default) keeps the official
test set and drops those patients' images from the training side (or from the test side);
``patient`` ignores the lists and draws every split by patient. Splits the release lacks are
always drawn by patient. Randomness comes from an explicit seed through
``numpy.random.default_rng``; the global RNG is never touched.

Stratification works on patients: each patient's stratum is the rarest class among its
positive labels (``negative`` when it has none, ``unlabeled`` when no label is known),
so that rare findings reach every split and every label fraction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import get_args

import numpy as np

from cxrlens.config import SharedSide, SplitMode
from cxrlens.data.records import CXRItem

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
PAPER_LABEL_FRACTIONS: tuple[float, ...] = (0.01, 0.10, 1.0)
"""Label fractions of paper 002 (1 %, 10 %, 100 %)."""
SPLIT_MODES: tuple[str, ...] = get_args(SplitMode)


class SplitLeakError(ValueError):
    """A patient appears in more than one split."""


@dataclass(frozen=True)
class Splits:
    """Item indices of each split (sorted int64 arrays); ``dropped``: the images ``official-disjoint`` left out
    (patients the official lists put on both sides), from the ``dropped_from`` side; ``released``: the patients
    the official lists share and ``official`` kept on both sides."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    mode: str = "patient"
    dropped: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    dropped_from: str = ""
    released: frozenset[str] = frozenset()
    moved: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    """``official-disjoint``: official val images of patients also in official train, moved to train."""

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def keep(self, indices: Sequence[int] | np.ndarray) -> Splits:
        """The same splits restricted to ``indices`` (e.g. a cache's ready items)."""
        kept = np.asarray(indices, dtype=np.int64)
        return replace(self, **{name: np.intersect1d(part, kept) for name, part in self.as_dict().items()},
                       dropped=np.intersect1d(self.dropped, kept), moved=np.intersect1d(self.moved, kept))

    def summary(self, items: Sequence[CXRItem]) -> dict:
        """What metrics.json and the report record: the mode, the patients shared by each pair of splits (kept by
        ``official``), what ``official-disjoint`` dropped (per official list) and moved from val to train."""
        return {"mode": self.mode, "shared": [pair.to_dict() for pair in shared_patients(items, self.as_dict())],
                "dropped": {"images": int(len(self.dropped)), "patients": count_patients(items, self.dropped),
                            "from": self.dropped_from, "by_list": _by_list(items, self.dropped)},
                "moved_val_to_train": int(len(self.moved))}

    def warning(self, items: Sequence[CXRItem]) -> str | None:
        """One line for a split that keeps patients the official lists share (``official``), or that dropped or
        moved images to make them disjoint (``official-disjoint``); None when there is nothing to say."""
        pairs = [pair for pair in shared_patients(items, self.as_dict()) if pair.patients]
        if pairs:
            return ("the official split shares patients, kept as released (splits: official): "
                    + "; ".join(pair.line() for pair in pairs)
                    + "; --splits official-disjoint drops them, --splits patient redraws every split")
        parts = []
        if len(self.dropped):
            lists = ", ".join(f"{count} {name}" for name, count in _by_list(items, self.dropped).items())
            other = "test" if self.dropped_from == "train" else "training"
            parts.append(f"left out {len(self.dropped)} images ({lists}) of {count_patients(items, self.dropped)} "
                         f"patients the official lists also put on the {other} side")
        if len(self.moved):
            parts.append(f"moved {len(self.moved)} official val images of {count_patients(items, self.moved)} "
                         "patients also in official train to train")
        return "official-disjoint: " + "; ".join(parts) if parts else None


def patients_of(items: Sequence[CXRItem], indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """The patient id of each image ``indices`` (what patient-level bootstraps resample)."""
    return np.array([items[int(i)].patient for i in indices])


def count_patients(items: Sequence[CXRItem], indices: Sequence[int] | np.ndarray) -> int:
    """How many distinct patients the images ``indices`` belong to."""
    return len({items[int(i)].patient for i in indices})


def _by_list(items: Sequence[CXRItem], indices: np.ndarray) -> dict[str, int]:
    """How many of ``indices`` each official list held."""
    counts: dict[str, int] = defaultdict(int)
    for index in indices:
        counts[str(items[int(index)].split)] += 1
    return dict(sorted(counts.items()))


@dataclass(frozen=True)
class SharedPatients:
    """Patients found in both splits of a pair, and how many images of each split they hold."""

    first: str
    second: str
    patients: int
    first_images: int
    second_images: int

    def line(self) -> str:
        return (f"{self.patients} patients in {self.first} and {self.second} ({self.first_images} {self.first} "
                f"images, {self.second_images} {self.second} images)")

    def to_dict(self) -> dict:
        return {"splits": [self.first, self.second], "patients": self.patients,
                "images": {self.first: self.first_images, self.second: self.second_images}}


def shared_patients(items: Sequence[CXRItem], parts: dict[str, np.ndarray]) -> list[SharedPatients]:
    """Per pair of non-empty ``parts``, the patients in both and the images they hold on each side."""
    patients = {name: [items[int(i)].patient for i in indices] for name, indices in parts.items() if len(indices)}
    found = []
    for first, second in combinations(patients, 2):
        both = set(patients[first]) & set(patients[second])
        found.append(SharedPatients(first, second, len(both), sum(p in both for p in patients[first]),
                                    sum(p in both for p in patients[second])))
    return found


def official_parts(items: Sequence[CXRItem]) -> dict[str, np.ndarray]:
    """The dataset's official lists as released (indices per split; empty where the release has none)."""
    return {name: np.array([i for i, item in enumerate(items) if item.split == name], dtype=np.int64)
            for name in SPLIT_NAMES}


def split_by_patient(
    items: Sequence[CXRItem],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    mode: SplitMode = "official-disjoint",
    drop_shared: SharedSide = "train",
) -> Splits:
    """Train / val / test splits of ``items`` under ``mode`` (see the module docstring).

    With an official mode, the dataset's lists are kept (NIH's train_val / test lists, CheXpert's valid.csv as
    test, Kermany's folders) and only the splits the release lacks are drawn, by patient, from its training part:
    ``val`` takes ``val_fraction`` of the training patients; a missing ``test`` takes ``test_fraction`` of all
    patients. ``official-disjoint`` first moves the official val images of patients also in official train to
    train, then drops the images of patients on both the training side (train + val) and the test side from the
    ``drop_shared`` side. Items without an official split (or every item, with ``patient``) are split at random by
    patient with the same fractions (paper 002 uses 70 / 10 / 20).
    """
    if mode not in SPLIT_MODES:
        raise ValueError(f"unknown split mode {mode!r}; choose one of {', '.join(SPLIT_MODES)}")
    if drop_shared not in get_args(SharedSide):
        raise ValueError(f"drop_shared must be train or test, not {drop_shared!r}")
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(f"fractions must be in [0, 1) and sum below 1 (val {val_fraction}, test {test_fraction})")
    rng = np.random.default_rng(seed)
    assigned: dict[str, list[int]] = {name: [] for name in SPLIT_NAMES}
    unassigned: list[int] = []
    for index, item in enumerate(items):
        if mode != "patient" and item.split in SPLIT_NAMES:
            assigned[item.split].append(index)
        else:
            unassigned.append(index)
    dropped: list[int] = []
    moved: list[int] = []
    if mode == "official-disjoint":
        dropped, moved = _make_disjoint(items, assigned, drop_shared)
    shared = set() if mode != "official" else _patients_in_several(items, assigned)
    official_of = {items[i].patient: name for name, indices in assigned.items() for i in indices}
    candidates = list(assigned["train"])
    for index in unassigned:  # a patient already in an official split keeps all images there
        assigned.get(official_of.get(items[index].patient, ""), candidates).append(index)
    kept = [i for i in candidates if items[i].patient in shared]  # never drawn into a split the release did not
    candidates = [i for i in candidates if items[i].patient not in shared]  # put them in
    drew_test = not assigned["test"]
    if drew_test:
        assigned["test"], candidates = _draw_patients(items, candidates, test_fraction, rng)
    if not assigned["val"]:
        share = val_fraction / (1 - test_fraction) if drew_test else val_fraction
        assigned["val"], candidates = _draw_patients(items, candidates, share, rng)
    assigned["train"] = candidates + kept
    splits = Splits(**{name: np.array(sorted(indices), dtype=np.int64) for name, indices in assigned.items()},
                    mode=mode, dropped=np.array(sorted(dropped), dtype=np.int64),
                    dropped_from=drop_shared if dropped else "", released=frozenset(shared),
                    moved=np.array(sorted(moved), dtype=np.int64))
    check_patient_disjoint(items, splits.as_dict(), released=shared)
    return splits


def _patients_in_several(items: Sequence[CXRItem], assigned: dict[str, list[int]]) -> set[str]:
    owners: dict[str, set[str]] = defaultdict(set)
    for name, indices in assigned.items():
        for index in indices:
            owners[items[index].patient].add(name)
    return {patient for patient, names in owners.items() if len(names) > 1}


def _make_disjoint(items: Sequence[CXRItem], assigned: dict[str, list[int]], drop_shared: SharedSide
                   ) -> tuple[list[int], list[int]]:
    """Make the official lists in ``assigned`` patient-disjoint in place; returns (dropped, moved val -> train)."""
    in_train = {items[i].patient for i in assigned["train"]}
    moved = [i for i in assigned["val"] if items[i].patient in in_train]
    assigned["val"] = [i for i in assigned["val"] if items[i].patient not in in_train]
    assigned["train"] += moved
    training = {items[i].patient for i in assigned["train"] + assigned["val"]}
    testing = {items[i].patient for i in assigned["test"]}
    both = training & testing
    sides = ("train", "val") if drop_shared == "train" else ("test",)
    dropped = [i for side in sides for i in assigned[side] if items[i].patient in both]
    for side in sides:
        assigned[side] = [i for i in assigned[side] if items[i].patient not in both]
    if testing and not assigned["test"]:
        raise ValueError(f"every one of the {len(testing)} official test patients also has training images, so "
                         "--drop-shared test leaves no test set; use --drop-shared train or --splits patient")
    return dropped, moved


def check_patient_disjoint(items: Sequence[CXRItem], splits: dict[str, np.ndarray],
                           released: set[str] = frozenset()) -> None:
    """Raise :class:`SplitLeakError` naming the patients that appear in two splits (other than the ``released``
    ones, which the dataset's own official lists share and ``splits: official`` keeps)."""
    owner: dict[str, str] = {}
    leaks: list[str] = []
    for name, indices in splits.items():
        for index in np.asarray(indices, dtype=np.int64):
            patient = items[int(index)].patient
            previous = owner.setdefault(patient, name)
            if previous != name and patient not in released:
                leaks.append(f"{patient} ({previous}/{name})")
    if leaks:
        unique = sorted(set(leaks))
        raise SplitLeakError(
            f"{len(unique)} patient(s) appear in more than one split, e.g. {', '.join(unique[:5])}; "
            "splits must be patient-level (--splits official-disjoint or --splits patient)"
        )


def label_fraction(items: Sequence[CXRItem], indices: Sequence[int], fraction: float, seed: int = 0) -> np.ndarray:
    """A stratified, patient-level subset holding ``fraction`` of the patients of ``indices``.

    Subsets are nested for one seed (the 1 % subset lies inside the 10 % one), every
    non-empty stratum keeps at least one patient, and ``fraction = 1`` returns all.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], not {fraction}")
    by_patient = _group_by_patient(items, indices)
    chosen: list[int] = []
    rng = np.random.default_rng(seed)
    for patients in _strata(items, by_patient).values():
        order = rng.permutation(len(patients))
        keep = max(1, int(round(fraction * len(patients))))
        for position in order[:keep]:
            chosen.extend(by_patient[patients[position]])
    return np.array(sorted(chosen), dtype=np.int64)


def keep_no_finding(items: Sequence[CXRItem], classes: Sequence[str], indices: Sequence[int], count: int,
                    seed: int = 0) -> np.ndarray:
    """``indices`` with only ``count`` (drawn at random) of its images without any finding (paper 003's training set:
    every image with a finding plus about 5,000 disease-free ones); a "No Finding" class does not count as a finding."""
    columns = [column for column, name in enumerate(classes) if name != "No Finding"]
    indices = np.sort(np.asarray(indices, dtype=np.int64))  # the draw does not depend on how train / val were cut
    healthy = np.array([not (items[int(i)].labels[columns] * items[int(i)].label_mask[columns]).any()
                        and items[int(i)].label_mask[columns].any() for i in indices], dtype=bool)
    if healthy.sum() <= count:
        return indices
    keep = np.random.default_rng(seed).choice(indices[healthy], size=count, replace=False)
    return np.sort(np.concatenate([indices[~healthy], keep]))


def _draw_patients(
    items: Sequence[CXRItem], indices: Sequence[int], fraction: float, rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """Split ``indices`` into (drawn, rest), drawing ``fraction`` of patients per stratum."""
    by_patient = _group_by_patient(items, indices)
    drawn: list[int] = []
    rest: list[int] = []
    for patients in _strata(items, by_patient).values():
        order = rng.permutation(len(patients))
        take = int(round(fraction * len(patients)))
        for rank, position in enumerate(order):
            (drawn if rank < take else rest).extend(by_patient[patients[position]])
    return drawn, rest


def _group_by_patient(items: Sequence[CXRItem], indices: Sequence[int]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for index in indices:
        groups[items[int(index)].patient].append(int(index))
    return dict(sorted(groups.items()))


def _strata(items: Sequence[CXRItem], by_patient: dict[str, list[int]]) -> dict[str, list[str]]:
    """Patients grouped by the rarest positive class among their images."""
    frequency: dict[int, int] = defaultdict(int)
    for indices in by_patient.values():
        for index in indices:
            item = items[index]
            for column in np.flatnonzero(item.labels * item.label_mask):
                frequency[int(column)] += 1
    strata: dict[str, list[str]] = defaultdict(list)
    for patient, indices in by_patient.items():
        positive = {int(c) for i in indices for c in np.flatnonzero(items[i].labels * items[i].label_mask)}
        if positive:
            key = f"class-{min(positive, key=lambda column: (frequency[column], column))}"
        elif any(items[i].label_mask.any() for i in indices):
            key = "negative"
        else:
            key = "unlabeled"
        strata[key].append(patient)
    return dict(sorted(strata.items()))
