"""Patient-level train / val / test splits and stratified label fractions.

No patient ever appears in two splits: :func:`split_by_patient` builds splits from whole
patients and :func:`check_patient_disjoint` asserts it (also for official split lists,
which are trusted only after that check). Randomness comes from an explicit seed through
``numpy.random.default_rng``; the global RNG is never touched.

Stratification works on patients: each patient's stratum is the rarest class among its
positive labels (``negative`` when it has none, ``unlabeled`` when no label is known),
so that rare findings reach every split and every label fraction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cxrlens.data.records import CXRItem

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
PAPER_LABEL_FRACTIONS: tuple[float, ...] = (0.01, 0.10, 1.0)
"""Label fractions of paper 002 (1 %, 10 %, 100 %)."""


class SplitLeakError(AssertionError):
    """A patient appears in more than one split."""


@dataclass(frozen=True)
class Splits:
    """Item indices of each split (sorted int64 arrays)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def keep(self, indices: Sequence[int] | np.ndarray) -> Splits:
        """The same splits restricted to ``indices`` (e.g. a cache's ready items)."""
        return Splits(*(np.intersect1d(part, np.asarray(indices, dtype=np.int64)) for part in (self.train, self.val, self.test)))


def split_by_patient(
    items: Sequence[CXRItem],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    use_official: bool = True,
) -> Splits:
    """Patient-level splits of ``items``.

    With ``use_official`` and items carrying the dataset's official split, those are kept
    (NIH's train_val/test lists, CheXpert's valid.csv as test, Kermany's folders) and only
    the splits the release lacks are drawn, by patient, from its training part: ``val``
    takes ``val_fraction`` of the training patients; a missing ``test`` takes
    ``test_fraction`` of all patients. Items without an official split are split at random
    by patient with the same fractions (paper 002 uses 70 / 10 / 20).
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(f"fractions must be in [0, 1) and sum below 1 (val {val_fraction}, test {test_fraction})")
    rng = np.random.default_rng(seed)
    assigned: dict[str, list[int]] = {name: [] for name in SPLIT_NAMES}
    unassigned: list[int] = []
    for index, item in enumerate(items):
        if use_official and item.split in SPLIT_NAMES:
            assigned[item.split].append(index)
        else:
            unassigned.append(index)
    check_patient_disjoint(items, {name: np.array(indices) for name, indices in assigned.items()})
    official_of = {items[i].patient: name for name, indices in assigned.items() for i in indices}
    candidates = list(assigned["train"])
    for index in unassigned:  # a patient already in an official split keeps all images there
        assigned.get(official_of.get(items[index].patient, ""), candidates).append(index)
    drew_test = not assigned["test"]
    if drew_test:
        assigned["test"], candidates = _draw_patients(items, candidates, test_fraction, rng)
    if not assigned["val"]:
        share = val_fraction / (1 - test_fraction) if drew_test else val_fraction
        assigned["val"], candidates = _draw_patients(items, candidates, share, rng)
    assigned["train"] = candidates
    splits = Splits(**{name: np.array(sorted(indices), dtype=np.int64) for name, indices in assigned.items()})
    check_patient_disjoint(items, splits.as_dict())
    return splits


def check_patient_disjoint(items: Sequence[CXRItem], splits: dict[str, np.ndarray]) -> None:
    """Raise :class:`SplitLeakError` naming the patients that appear in two splits."""
    owner: dict[str, str] = {}
    leaks: list[str] = []
    for name, indices in splits.items():
        for index in np.asarray(indices, dtype=np.int64):
            patient = items[int(index)].patient
            previous = owner.setdefault(patient, name)
            if previous != name:
                leaks.append(f"{patient} ({previous}/{name})")
    if leaks:
        unique = sorted(set(leaks))
        raise SplitLeakError(
            f"{len(unique)} patient(s) appear in more than one split, e.g. {', '.join(unique[:5])}; "
            "splits must be patient-level (use use_official=False to redraw them)"
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
