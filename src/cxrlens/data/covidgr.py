"""COVIDGR-1.0 (Tabik et al. 2020), the COVID vs no-COVID set of paper 002.

Layout of the public release: ``COVIDGR-1.0/P/`` holds the 426 radiographs of PCR-positive
COVID-19 patients, ``COVIDGR-1.0/N/`` the 426 controls; ``root`` may be the folder holding
``COVIDGR-1.0`` or ``COVIDGR-1.0`` itself. One binary class, ``COVID-19``; each image is
its own patient (one radiograph per patient in the release).

Where the release's severity list is present - a CSV in ``root`` with a column naming the
image files and one whose header says ``severity`` - each positive image's level
(``NORMAL-PCR+``, ``MILD``, ``MODERATE``, ``SEVERE``: 76 positives look normal) is kept in
``meta["severity"]``; rows naming no image here are reported, never guessed. The release
has no official split: paper 002 uses its own (cxrlens draws one by patient, seeded).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlens.data.records import CXRDataset, CXRItem, DatasetFormatError, DatasetProblems, scan_images, usable_file

COVIDGR_CLASSES: tuple[str, ...] = ("COVID-19",)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_FOLDERS = (("P", 1.0), ("N", 0.0))


class COVIDGR(CXRDataset):
    """Reader for the COVIDGR-1.0 folders (see the module docstring)."""

    name = "covidgr"

    def __init__(self, root: str | os.PathLike) -> None:
        root = Path(root)
        self.root = root / "COVIDGR-1.0" if (root / "COVIDGR-1.0").is_dir() else root
        if not any((self.root / folder).is_dir() for folder, _ in _FOLDERS):
            raise DatasetFormatError(f"{self.root}: no P/ or N/ folder (COVIDGR-1.0 layout COVIDGR-1.0/{{P,N}}/)")
        problems = DatasetProblems()
        severity = _severity(self.root, problems)
        found = {folder: scan_images(self.root / folder, _IMAGE_SUFFIXES) for folder, _ in _FOLDERS}
        both = set(found["P"]) & set(found["N"])
        for name in sorted(both):
            problems.add("file names in both P/ and N/ (left out of both)", name)
        items: list[CXRItem] = []
        for folder, positive in _FOLDERS:
            for name, path in found[folder].items():
                if name in both or not usable_file(path, f"{folder}/{name}", problems):
                    continue
                meta = {"severity": severity[name]} if positive and name in severity else {}
                items.append(CXRItem(path=path, patient_id=Path(name).stem, labels=np.array([positive], np.float32),
                                     label_mask=np.ones(1, dtype=bool), meta=meta))
        for name in sorted(set(severity) - set(found["P"]) - set(found["N"])):
            problems.add("severity rows naming no image here", name)
        if not items:
            raise DatasetFormatError(f"{self.root}: no images in P/ or N/")
        super().__init__(COVIDGR_CLASSES, items, problems, roots=[root])


def _severity(root: Path, problems: DatasetProblems) -> dict[str, str]:
    """File name -> severity level, from the first CSV in ``root`` with a severity column (empty without one)."""
    for path in sorted(root.glob("*.csv")):
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError, UnicodeDecodeError) as error:
            problems.add("severity lists that cannot be read", f"{path.name}: {' '.join(str(error).split())}")
            continue
        level = next((column for column in frame.columns if "sever" in column.lower()), None)
        names = next((column for column in frame.columns if column != level), None)
        if level is None or names is None:
            continue
        return {Path(str(name)).name: str(value).strip().upper() for name, value in zip(frame[names], frame[level])
                if str(name).strip()}
    return {}
