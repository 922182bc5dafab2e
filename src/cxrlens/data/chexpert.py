"""CheXpert (Irvin et al. 2019) in its public layout (``CheXpert-v1.0`` or ``-small``).

``root`` is the folder holding ``train.csv`` and ``valid.csv``. Their ``Path`` column is
relative to root's parent (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``).
Each of the 14 observation columns holds ``1.0`` (positive), ``0.0`` (negative), ``-1.0``
(uncertain) or is blank (not mentioned, read as negative as in the CheXpert paper).
Uncertain labels follow an explicit policy, never NaN:

* ``zeros`` (default; paper 000 maps uncertain to negative),
* ``ones`` (U-Ones of the CheXpert paper),
* ``ignore`` (masked out of losses and metrics through ``label_mask``).

As in the papers, the official validation set (``valid.csv``) is the test split.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cxrlens.data.records import (
    CXRDataset,
    CXRItem,
    DatasetFormatError,
    DatasetProblems,
    require_columns,
    usable_file,
)

CHEXPERT_CLASSES: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)  # fmt: skip
"""The 14 observations, in the column order of the released CSVs."""

UncertainPolicy = Literal["zeros", "ones", "ignore"]
ViewFilter = Literal["frontal", "lateral", "all"]
_SPLIT_FILES = (("train.csv", "train"), ("valid.csv", "test"))
_PATIENT = re.compile(r"(patient\d+)")
_LABEL_VALUES = {1.0, 0.0, -1.0}


class CheXpert(CXRDataset):
    """Reader for a CheXpert release folder (see the module docstring)."""

    name = "chexpert"

    def __init__(
        self,
        root: str | os.PathLike,
        uncertain: UncertainPolicy = "zeros",
        views: ViewFilter = "frontal",
    ) -> None:
        if uncertain not in ("zeros", "ones", "ignore"):
            raise ValueError(f"uncertain policy must be zeros, ones or ignore, not {uncertain!r}")
        if views not in ("frontal", "lateral", "all"):
            raise ValueError(f"views must be frontal, lateral or all, not {views!r}")
        self.root = Path(root)
        self.uncertain = uncertain
        problems = DatasetProblems()
        items: list[CXRItem] = []
        found_any = False
        for file_name, split in _SPLIT_FILES:
            csv_path = self.root / file_name
            if not csv_path.exists():
                continue
            found_any = True
            items.extend(self._read_split(csv_path, split, views, problems))
        if not found_any:
            raise DatasetFormatError(f"{self.root}: no train.csv or valid.csv (CheXpert layout)")
        super().__init__(CHEXPERT_CLASSES, items, problems, roots=[self.root])

    def _read_split(self, csv_path: Path, split: str, views: ViewFilter, problems: DatasetProblems) -> list[CXRItem]:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        require_columns(csv_path, frame.columns, ("Path", "Frontal/Lateral", "AP/PA", *CHEXPERT_CLASSES))
        values = frame.loc[:, list(CHEXPERT_CLASSES)].replace("", "0").apply(pd.to_numeric, errors="coerce")
        bad = ~values.isin(_LABEL_VALUES)
        if bad.to_numpy().any():
            row, column = np.argwhere(bad.to_numpy())[0]
            raise DatasetFormatError(
                f"{csv_path}: {int(bad.to_numpy().sum())} label value(s) outside 1.0/0.0/-1.0/blank "
                f"(first: line {row + 2}, column {CHEXPERT_CLASSES[column]!r} = "
                f"{frame.iloc[row][CHEXPERT_CLASSES[column]]!r})"
            )
        raw = values.to_numpy(dtype=np.float32)
        labels, masks = self._apply_policy(raw)
        items = []
        for index, (relative, orientation, projection) in enumerate(
            zip(frame["Path"], frame["Frontal/Lateral"], frame["AP/PA"])
        ):
            if views != "all" and orientation.lower() != views:
                continue
            path = self._resolve(relative)
            if not usable_file(path, relative, problems):
                continue
            patient = _PATIENT.search(relative)
            if patient is None:
                problems.add("rows whose Path names no patientNNNNN folder", relative)
                continue
            items.append(
                CXRItem(
                    path=path,
                    patient_id=patient.group(1),
                    labels=labels[index],
                    label_mask=masks[index],
                    view=projection or orientation,
                    split=split,
                )
            )
        return items

    def _apply_policy(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        uncertain = raw == -1.0
        labels = np.where(uncertain, 1.0 if self.uncertain == "ones" else 0.0, raw).astype(np.float32)
        masks = ~uncertain if self.uncertain == "ignore" else np.ones_like(uncertain)
        return labels, masks

    def _resolve(self, relative: str) -> Path | None:
        parts = Path(relative).parts
        candidates = [self.root.parent / relative, self.root / relative]
        if len(parts) > 1:
            candidates.append(self.root.joinpath(*parts[1:]))
        for candidate in candidates:
            if candidate.exists():
                return candidate
        return None
