"""covid-chestxray-dataset (Cohen et al. 2020), the "C19-Cohen" set of paper 002.

Layout: ``metadata.csv`` + ``images/`` (``folder`` + ``filename`` columns give the path).
The task is paper 002's: COVID-19 (positive) against other types of pneumonia
(negative), on X-ray rows in PA or AP views only. Rows outside the task (CT, lateral
views, ``No Finding``, ``todo``, non-pneumonia findings such as ARDS alone) are counted in
``excluded``; rows whose image file is missing or empty are reported as problems.
Both the flat findings of the 2020 releases (``COVID-19``, ``SARS``, ``Streptococcus``,
...) and the later hierarchical ones (``Pneumonia/Viral/COVID-19``) are understood.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

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

COHEN_CLASSES: tuple[str, ...] = ("COVID-19",)
COHEN_VIEWS: tuple[str, ...] = ("PA", "AP", "AP Supine", "AP Erect")
"""Frontal projections kept by default (AP Supine / AP Erect are AP radiographs)."""
_NOT_PNEUMONIA = {"no finding", "todo", "unknown", "ards", "tuberculosis", ""}


class CohenCovid(CXRDataset):
    """Reader for covid-chestxray-dataset, task COVID-19 vs other pneumonia."""

    name = "cohen"

    def __init__(self, root: str | os.PathLike, views: Iterable[str] = COHEN_VIEWS) -> None:
        self.root = Path(root)
        csv_path = self.root / "metadata.csv"
        if not csv_path.exists():
            raise DatasetFormatError(f"{self.root}: no metadata.csv (covid-chestxray-dataset layout)")
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        require_columns(csv_path, frame.columns, ("patientid", "finding", "view", "modality", "filename"))
        wanted_views = {view.lower() for view in views}
        problems = DatasetProblems()
        self.excluded: Counter[str] = Counter()
        items = []
        for row in frame.itertuples(index=False):
            reason = _exclusion(row.modality, row.view, row.finding, wanted_views)
            if reason:
                self.excluded[reason] += 1
                continue
            folder = getattr(row, "folder", "") or "images"
            path = self.root / folder / row.filename
            if not usable_file(path, f"{folder}/{row.filename}", problems):
                continue
            positive = "covid-19" in row.finding.lower()
            items.append(
                CXRItem(
                    path=path,
                    patient_id=str(row.patientid),
                    labels=np.array([float(positive)], dtype=np.float32),
                    label_mask=np.ones(1, dtype=bool),
                    view=row.view,
                    meta={"finding": row.finding},
                )
            )
        super().__init__(COHEN_CLASSES, items, problems, roots=[self.root])


def _exclusion(modality: str, view: str, finding: str, views: set[str]) -> str | None:
    """Why a metadata row is outside the COVID-19 vs other-pneumonia task, or None."""
    if modality.strip().lower() != "x-ray":
        return f"modality {modality or 'blank'}"
    if view.strip().lower() not in views:
        return f"view {view or 'blank'}"
    text = finding.strip().lower()
    if "covid-19" in text:
        return None
    if "/" in text:
        return None if text.startswith("pneumonia") else f"finding {finding}"
    parts = {part.strip() for part in text.split(",")}
    return f"finding {finding or 'blank'}" if parts <= _NOT_PNEUMONIA else None
