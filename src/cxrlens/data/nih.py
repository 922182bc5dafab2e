"""NIH ChestX-ray14 (Wang et al. 2017) in its public layout.

Expected under ``root``:

* ``Data_Entry_2017*.csv`` (v2017 or v2020): ``Image Index``, ``Finding Labels``
  (``|``-separated, or ``No Finding``), ``Patient ID``, ``View Position``;
* ``BBox_List_2017.csv`` (optional): ``Image Index``, ``Finding Label``,
  ``Bbox [x,y,w,h]`` followed by three unnamed columns, in 1024-px coordinates, several
  rows per image possible; its findings use ``Infiltrate`` where the labels say
  ``Infiltration``;
* ``train_val_list.txt`` / ``test_list.txt`` (optional): the official patient-level split;
* images in ``images/`` or ``images_*/images/`` (the archive layout of the full download).

Images stored at another size than NIH's 1,024 px (downsampled copies) get their boxes
scaled by ``stored size / 1024``, read from each boxed image's header.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlens.data.boxes import Box
from cxrlens.data.io import CXRImageError, read_image_size
from cxrlens.data.labels import canonical
from cxrlens.data.records import (
    CXRDataset,
    CXRItem,
    DatasetFormatError,
    DatasetProblems,
    label_vector,
    require_columns,
    scan_images,
    usable_file,
)

NIH_CLASSES: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia",
)  # fmt: skip
"""The 14 findings, in the order of Wang et al. 2017 and most later papers."""

NIH_BOX_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax",
)  # fmt: skip
"""The 8 findings that carry radiologist boxes in ``BBox_List_2017.csv``."""

NIH_BOX_COORDINATE_SIZE = 1024
_NO_FINDING = "No Finding"


class NIHChestXray14(CXRDataset):
    """Reader for one NIH ChestX-ray14 folder (see the module docstring for the layout).

    ``only_boxed`` keeps just the images that have radiologist boxes.
    """

    name = "nih"

    def __init__(self, root: str | os.PathLike, only_boxed: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetFormatError(f"{self.root}: NIH ChestX-ray14 folder does not exist")
        problems = DatasetProblems()
        entries = _read_data_entry(self.root)
        images = _find_images(self.root)
        boxes = _read_boxes(self.root, problems)
        official = _official_splits(self.root)
        items = []
        for row in entries.itertuples(index=False):
            name = row.image
            path = images.get(name)
            if not usable_file(path, name, problems):
                continue
            findings = [label for label in row.labels.split("|") if label and label != _NO_FINDING]
            unknown = [label for label in findings if label not in NIH_CLASSES]
            if unknown:
                problems.add("rows with unknown finding names", f"{name} ({'|'.join(unknown)})")
                continue
            image_boxes = boxes.get(name, ())
            if only_boxed and not image_boxes:
                continue
            if image_boxes:
                try:
                    image_boxes = _scale_to_stored_size(path, image_boxes)
                except CXRImageError as error:
                    problems.add("boxed images whose size cannot be read", str(error))
                    continue
            items.append(
                CXRItem(
                    path=path,
                    patient_id=str(row.patient),
                    labels=label_vector(NIH_CLASSES, findings),
                    label_mask=np.ones(len(NIH_CLASSES), dtype=bool),
                    view=str(row.view) if isinstance(row.view, str) else None,
                    boxes=image_boxes,
                    split=official.get(name),
                )
            )
        super().__init__(NIH_CLASSES, items, problems, roots=[self.root])


def _read_data_entry(root: Path) -> pd.DataFrame:
    candidates = sorted(root.glob("Data_Entry_2017*.csv"))
    if not candidates:
        raise DatasetFormatError(f"{root}: no Data_Entry_2017*.csv label file found")
    path = candidates[-1]  # v2020 sorts after the original 2017 file
    try:
        frame = pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DatasetFormatError(f"{path}: not a readable CSV ({error})") from error
    required = ("Image Index", "Finding Labels", "Patient ID", "View Position")
    require_columns(path, frame.columns, required)
    frame = frame.loc[:, list(required)]
    frame.columns = ["image", "labels", "patient", "view"]
    blank = frame["image"].isna() | frame["labels"].isna() | frame["patient"].isna()
    if blank.any():
        first = frame.index[blank][0] + 2
        raise DatasetFormatError(
            f"{path}: {int(blank.sum())} row(s) with an empty Image Index, Finding Labels or "
            f"Patient ID (first at line {first})"
        )
    return frame.drop_duplicates("image")


def _find_images(root: Path) -> dict[str, Path]:
    found = scan_images(root / "images", (".png",))
    for archive in sorted(root.glob("images_*")):
        found.update(scan_images(archive / "images", (".png",)))
    if not found:
        raise DatasetFormatError(f"{root}: no PNG images in images/ or images_*/images/")
    return found


def _read_boxes(root: Path, problems: DatasetProblems) -> dict[str, tuple[Box, ...]]:
    path = root / "BBox_List_2017.csv"
    if not path.exists():
        return {}
    frame = pd.read_csv(path, header=0, dtype=str)
    require_columns(path, frame.columns, ("Image Index", "Finding Label"))
    start = frame.columns.get_loc("Finding Label") + 1
    coordinates = frame.iloc[:, start : start + 4]
    if coordinates.shape[1] != 4:
        raise DatasetFormatError(f"{path}: expected four box columns x, y, w, h after 'Finding Label'")
    values = coordinates.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    boxes: dict[str, list[Box]] = {}
    for image, finding, (x, y, w, h) in zip(frame["Image Index"], frame["Finding Label"], values):
        finding = canonical(str(finding))
        if finding not in NIH_BOX_FINDINGS:
            problems.add("box rows with an unknown finding", f"{image} ({finding})")
        elif not np.isfinite([x, y, w, h]).all() or w <= 0 or h <= 0:
            problems.add("box rows with invalid coordinates", str(image))
        else:
            boxes.setdefault(str(image), []).append(Box(finding, x, y, w, h))
    return {image: tuple(image_boxes) for image, image_boxes in boxes.items()}


def _scale_to_stored_size(path: Path, boxes: Sequence[Box]) -> tuple[Box, ...]:
    width, height = read_image_size(path)
    return tuple(
        box.rescaled(width / NIH_BOX_COORDINATE_SIZE, height / NIH_BOX_COORDINATE_SIZE)
        for box in boxes
    )


def _official_splits(root: Path) -> dict[str, str]:
    splits: dict[str, str] = {}
    for file_name, split in (("train_val_list.txt", "train"), ("test_list.txt", "test")):
        path = root / file_name
        if path.exists():
            for line in path.read_text().split():
                splits[line.strip()] = split
    return splits
