"""Patient-level splits, official lists and stratified nested label fractions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cxrlens.data import KermanyPneumonia, NIHChestXray14, open_dataset
from cxrlens.data.splits import SplitLeakError, check_patient_disjoint, label_fraction, split_by_patient


def _patients(items, indices) -> set[str]:  # noqa: ANN001
    return {items[i].patient_id for i in indices}


def test_nih_official_lists_kept_and_val_drawn_by_patient(nih_bbox_root: Path, nih_sample_root: Path) -> None:
    dataset = open_dataset("nih", [nih_bbox_root, nih_sample_root])
    splits = split_by_patient(dataset.items, val_fraction=0.1, seed=3)
    items = dataset.items
    assert all(items[i].split == "test" for i in splits.test)
    assert all(items[i].split == "train" for i in np.concatenate([splits.train, splits.val]))
    sets = [_patients(items, s) for s in (splits.train, splits.val, splits.test)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(splits.train) + len(splits.val) + len(splits.test) == len(items)
    assert 0.05 < len(sets[1]) / (len(sets[0]) + len(sets[1])) < 0.15


def test_random_split_is_seeded_and_patient_level(kermany_root: Path) -> None:
    items = KermanyPneumonia(kermany_root).items
    first = split_by_patient(items, seed=0)
    again = split_by_patient(items, seed=0)
    other = split_by_patient(items, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(first.as_dict().values(), again.as_dict().values()))
    assert not np.array_equal(first.test, other.test)
    patients = len({item.patient_id for item in items})
    assert abs(len(_patients(items, first.test)) / patients - 0.2) < 0.02
    positive_rate = [np.mean([items[i].labels[0] for i in part]) for part in first.as_dict().values()]
    assert max(positive_rate) - min(positive_rate) < 0.05  # stratified


def test_leak_detected(kermany_root: Path) -> None:
    items = KermanyPneumonia(kermany_root).items
    splits = split_by_patient(items)
    leaked = {"train": splits.train, "test": np.append(splits.test, splits.train[0])}
    with pytest.raises(SplitLeakError, match="appear in more than one split"):
        check_patient_disjoint(items, leaked)
    # an official split that puts one patient in two lists: dropped, kept as released, or redrawn - never a leak
    broken = list(items)
    seen: dict[str, int] = {}
    first, twin = next((seen[item.patient_id], i) for i, item in enumerate(broken) if seen.setdefault(item.patient_id, i) != i)
    broken[first] = replace(broken[first], split="train")
    broken[twin] = replace(broken[twin], split="test")
    disjoint = split_by_patient(broken)
    patient = broken[first].patient
    assert set(disjoint.dropped) == {i for i, item in enumerate(broken) if item.patient == patient} - {twin}
    assert twin in disjoint.test
    kept = split_by_patient(broken, mode="official")
    assert kept.released == {broken[first].patient} and first in np.union1d(kept.train, kept.val)
    assert split_by_patient(broken, mode="patient").train.size > 0


def test_label_fractions_nested_stratified_seeded(nih_sample_root: Path) -> None:
    dataset = NIHChestXray14(nih_sample_root)
    items = dataset.items
    train = split_by_patient(items, mode="patient").train
    subsets = {f: label_fraction(items, train, f, seed=7) for f in (0.01, 0.1, 1.0)}
    assert np.array_equal(subsets[1.0], np.sort(train))
    assert set(subsets[0.01]) <= set(subsets[0.1]) <= set(subsets[1.0])
    assert 0.07 < len(subsets[0.1]) / len(train) < 0.14
    assert np.array_equal(subsets[0.1], label_fraction(items, train, 0.1, seed=7))
    # every finding present in training keeps at least one positive patient at 1 %
    labels = dataset.label_matrix()
    present = labels[train].sum(axis=0) > 0
    assert (labels[subsets[0.01]].sum(axis=0) > 0)[present].mean() > 0.7
    with pytest.raises(ValueError):
        label_fraction(items, train, 0.0)
