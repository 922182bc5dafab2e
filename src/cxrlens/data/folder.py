"""A user's own images: a folder tree of DICOM / PNG / JPEG files, or a CSV listing them.

Unlabeled use (pretraining) needs only a folder. With a CSV, ``path_column`` names the
image (absolute, or relative to the CSV's folder), optional ``label_columns`` hold 1/0
(blank or -1 = unknown, masked out) and an optional ``patient_column`` gives the patient.
Without a patient column the patient is the DICOM PatientID when the file is DICOM and
has one - read as this machine's keyed hash of it (:func:`cxrlens.paths.pseudonym_key`), so
the MRN itself never reaches a cache, a plan or a checkpoint, and is marked
``meta["patient_id"] = "dicom"`` - else the file's path relative to the root, so each image is its own patient:
give a patient column when patients have several images, or splits may leak.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlens.data.io import IMAGE_SUFFIXES, CXRImageError, is_dicom, read_dicom_header
from cxrlens.data.records import (
    CXRDataset,
    CXRItem,
    DatasetFormatError,
    DatasetProblems,
    require_columns,
    unlabeled,
    usable_file,
)
from cxrlens.paths import pseudonym_key, pseudonym_key_id


class ImageFolder(CXRDataset):
    """Every image under ``root`` (recursive), unlabeled, or the rows of ``csv``."""

    name = "folder"

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        csv: str | os.PathLike | None = None,
        path_column: str = "path",
        label_columns: Sequence[str] = (),
        patient_column: str | None = None,
    ) -> None:
        if (root is None) == (csv is None):
            raise ValueError("give exactly one of a folder (root) or a CSV file (csv)")
        problems = DatasetProblems()
        if csv is not None:
            classes, items = _from_csv(Path(csv), path_column, tuple(label_columns), patient_column, problems)
        else:
            classes, items = (), _from_folder(Path(root), problems)
        super().__init__(classes, items, problems, roots=[Path(csv).parent if csv is not None else Path(root)])


def _from_folder(root: Path, problems: DatasetProblems) -> list[CXRItem]:
    if not root.is_dir():
        raise DatasetFormatError(f"{root}: image folder does not exist")
    items = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or (path.suffix.lower() not in IMAGE_SUFFIXES and not is_dicom(path)):
            continue
        relative = path.relative_to(root).as_posix()
        if usable_file(path, relative, problems):
            labels, mask = unlabeled(0)
            patient, meta = _patient(path, relative)
            items.append(CXRItem(path=path, patient_id=patient, labels=labels, label_mask=mask, meta=meta))
    if not items:
        raise DatasetFormatError(f"{root}: no PNG, JPEG or DICOM files found")
    return items


def _from_csv(
    csv: Path, path_column: str, label_columns: tuple[str, ...], patient_column: str | None,
    problems: DatasetProblems,
) -> tuple[tuple[str, ...], list[CXRItem]]:
    if not csv.is_file():
        raise DatasetFormatError(f"{csv}: CSV file does not exist")
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    require_columns(csv, frame.columns, (path_column, *label_columns, *([patient_column] if patient_column else [])))
    values = frame.loc[:, list(label_columns)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
    allowed = np.isnan(values) | np.isin(values, (0.0, 1.0, -1.0))
    if not allowed.all():
        row, column = np.argwhere(~allowed)[0]
        raise DatasetFormatError(
            f"{csv}: label values must be 1, 0, -1 or blank (line {row + 2}, column "
            f"{label_columns[column]!r} = {frame.iloc[row][label_columns[column]]!r})"
        )
    known = np.isin(values, (0.0, 1.0))
    items = []
    for index, relative in enumerate(frame[path_column]):
        path = Path(relative) if Path(relative).is_absolute() else csv.parent / relative
        if not usable_file(path, relative, problems):
            continue
        patient, meta = (frame[patient_column].iloc[index], {}) if patient_column else _patient(path, relative)
        items.append(
            CXRItem(
                path=path,
                patient_id=str(patient),
                labels=np.where(known[index], values[index], 0.0).astype(np.float32),
                label_mask=known[index].copy(),
                meta=meta,
            )
        )
    return label_columns, items


def _patient(path: Path, fallback: str) -> tuple[str, dict[str, str]]:
    """The DICOM PatientID (marked as such in the item's meta), else ``fallback``."""
    if is_dicom(path):
        try:
            patient = str(read_dicom_header(path).get("PatientID", "") or "")
        except CXRImageError:
            patient = ""
        if patient:  # an MRN: kept only as this machine's keyed hash, which still groups the patient
            return "dicom-" + hmac.new(pseudonym_key(), patient.encode(), hashlib.sha256).hexdigest()[:20], {
                "patient_id": "dicom", "pseudonym_key": pseudonym_key_id()}
    return fallback, {}
