"""Open a dataset by name, and combine several into one item list.

Combining readers with different class sets (NIH's 14 findings, Kermany's pneumonia,
Cohen's COVID-19) gives the ordered union of their classes; an item's label is masked
out (``label_mask`` False) for every class its own dataset does not define, so a
combined set serves unlabeled pretraining and per-dataset supervision alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from cxrlens.data.chexpert import CheXpert
from cxrlens.data.cohen import CohenCovid
from cxrlens.data.covidgr import COVIDGR
from cxrlens.data.folder import ImageFolder
from cxrlens.data.kermany import KermanyPneumonia
from cxrlens.data.nih import NIHChestXray14
from cxrlens.data.records import CXRDataset, DatasetProblems

READERS: dict[str, type[CXRDataset]] = {
    "nih": NIHChestXray14,
    "chexpert": CheXpert,
    "kermany": KermanyPneumonia,
    "cohen": CohenCovid,
    "covidgr": COVIDGR,
    "folder": ImageFolder,
}

SAMPLE_FOLDERS: dict[str, tuple[str, str]] = {
    "nih-bbox": ("nih", "nih-chestxray14-bbox"),
    "nih-sample": ("nih", "nih-chestxray14-sample"),
    "kermany": ("kermany", "kermany-pneumonia"),
    "kermany-more": ("kermany", "kermany-pneumonia-more"),
    "cohen": ("cohen", "covid-chestxray-dataset"),
}
"""The sample sets under the data root: short name -> (reader, folder)."""


def open_dataset(name: str, roots: Sequence[str | os.PathLike], **options: object) -> CXRDataset:
    """Read ``roots`` with the reader called ``name``; several roots are combined."""
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(READERS)}")
    if not roots:
        raise ValueError(f"dataset {name!r} needs at least one folder")
    datasets = [READERS[name](Path(root), **options) for root in roots]
    return datasets[0] if len(datasets) == 1 else combine(datasets)


def open_sample(data_root: str | os.PathLike, names: Sequence[str]) -> CXRDataset:
    """Open sample sets by their short names (``SAMPLE_FOLDERS``) under ``data_root``."""
    unknown = [name for name in names if name not in SAMPLE_FOLDERS]
    if unknown:
        raise ValueError(f"unknown sample set(s) {unknown}; choose from {', '.join(SAMPLE_FOLDERS)}")
    datasets = [
        READERS[SAMPLE_FOLDERS[name][0]](Path(data_root) / SAMPLE_FOLDERS[name][1]) for name in names
    ]
    return datasets[0] if len(datasets) == 1 else combine(datasets)


def combine(datasets: Sequence[CXRDataset]) -> CXRDataset:
    """One dataset over the union of the classes of ``datasets`` (see the module docstring)."""
    classes: list[str] = []
    for dataset in datasets:
        classes.extend(name for name in dataset.classes if name not in classes)
    position = {name: index for index, name in enumerate(classes)}
    problems = DatasetProblems()
    items = []
    for dataset in datasets:
        columns = [position[name] for name in dataset.classes]
        for kind, count in dataset.problems.counts.items():
            problems.counts[f"{dataset.name}: {kind}"] = count
            problems.messages[f"{dataset.name}: {kind}"] = dataset.problems.messages[kind]
        for item in dataset.items:
            labels = np.zeros(len(classes), dtype=np.float32)
            mask = np.zeros(len(classes), dtype=bool)
            labels[columns] = item.labels
            mask[columns] = item.label_mask
            items.append(replace(item, labels=labels, label_mask=mask, meta={**item.meta, "source": dataset.name}))
    name = "+".join(dataset.name for dataset in datasets)
    return CXRDataset(classes, items, problems, name=name, log_problems=False,
                      roots=[root for dataset in datasets for root in dataset.roots])
