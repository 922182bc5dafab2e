"""Kermany et al. (Cell 2018) pediatric pneumonia set, the "Cell" dataset of papers 001/002.

Layout: ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``; ``root`` may be the
folder holding ``chest_xray`` or ``chest_xray`` itself, and any split folder may be
absent. One binary class, ``Pneumonia``. The subtype (``bacteria`` / ``virus`` /
``normal``) and the patient come from the released file names:
``person1_bacteria_1.jpeg`` -> patient ``person1``; ``IM-0115-0001.jpeg`` -> ``IM-0115``;
``NORMAL2-IM-1067-0001.jpeg`` -> ``NORMAL2-IM-1067``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from cxrlens.data.records import (
    CXRDataset,
    CXRItem,
    DatasetFormatError,
    DatasetProblems,
    scan_images,
    usable_file,
)

KERMANY_CLASSES: tuple[str, ...] = ("Pneumonia",)
KERMANY_SPLITS: tuple[str, ...] = ("train", "val", "test")
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_PERSON = re.compile(r"^(person\d+)_(bacteria|virus)", re.IGNORECASE)
_NORMAL = re.compile(r"^((?:NORMAL\d+-)?IM-\d+)", re.IGNORECASE)


class KermanyPneumonia(CXRDataset):
    """Reader for the Kermany pediatric pneumonia folders (see the module docstring)."""

    name = "kermany"

    def __init__(self, root: str | os.PathLike) -> None:
        root = Path(root)
        self.root = root / "chest_xray" if (root / "chest_xray").is_dir() else root
        problems = DatasetProblems()
        items: list[CXRItem] = []
        present = [split for split in KERMANY_SPLITS if (self.root / split).is_dir()]
        if not present:
            raise DatasetFormatError(
                f"{self.root}: none of the split folders train/, val/, test/ (Kermany layout "
                "chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/)"
            )
        for split in present:
            for folder, positive in (("NORMAL", 0.0), ("PNEUMONIA", 1.0)):
                for name, path in scan_images(self.root / split / folder, _IMAGE_SUFFIXES).items():
                    if not usable_file(path, f"{split}/{folder}/{name}", problems):
                        continue
                    parsed = parse_kermany_name(name)
                    if parsed is None:
                        problems.add("files whose name gives no patient id", f"{split}/{folder}/{name}")
                        continue
                    patient, subtype = parsed
                    if (subtype == "normal") != (positive == 0.0):
                        problems.add("files whose name contradicts their folder", f"{split}/{folder}/{name}")
                        continue
                    items.append(
                        CXRItem(
                            path=path,
                            patient_id=patient,
                            labels=np.array([positive], dtype=np.float32),
                            label_mask=np.ones(1, dtype=bool),
                            split=split,
                            meta={"subtype": subtype},
                        )
                    )
        if not items:
            raise DatasetFormatError(f"{self.root}: no images under */NORMAL or */PNEUMONIA")
        super().__init__(KERMANY_CLASSES, items, problems, roots=[root])


def parse_kermany_name(name: str) -> tuple[str, str] | None:
    """``(patient id, subtype)`` from a released Kermany file name, or None."""
    person = _PERSON.match(name)
    if person:
        return person.group(1).lower(), person.group(2).lower()
    normal = _NORMAL.match(name)
    if normal:
        return normal.group(1).upper(), "normal"
    return None
