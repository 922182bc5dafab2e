"""Generated trees in the exact public layouts of the full datasets, for checks that need the real folder structure
and file lists but not the pixels (every image is a tiny grey PNG or JPEG).

:func:`full_layout` writes ``data/ChestX-ray14`` (NIH: ``images_00N/images``, ``Data_Entry_2017_v2020.csv``,
``BBox_List_2017.csv`` with its trailing empty columns, ``train_val_list.txt`` / ``test_list.txt``; every boxed image in
the test list, as in the release), ``data/CheXpert-v1.0`` (``train.csv`` / ``valid.csv``, frontal and lateral views),
``data/chest_xray`` (Kermany ``train`` / ``val`` / ``test`` x ``NORMAL`` / ``PNEUMONIA``),
``data/covid-chestxray-dataset`` (``metadata.csv`` + ``images``) and ``data/COVIDGR-1.0`` (``P`` / ``N`` + a severity
list) under one folder: the configs under ``configs/`` name exactly these roots.
"""

from __future__ import annotations

import csv
import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image

NIH_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
BOX_FINDINGS = NIH_FINDINGS[:8]
CHEXPERT = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
            "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
            "Fracture", "Support Devices")


@functools.cache
def _encoded(suffix: str, size: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), 128, np.uint8)).save(buffer, format="PNG" if suffix == ".png" else "JPEG")
    return buffer.getvalue()


def _image(path: Path, size: int = 16) -> None:
    """A tiny grey image, encoded once per format and size (thousands of files stay fast)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_encoded(path.suffix, size))


def nih_tree(root: Path, patients: int = 400, seed: int = 0) -> Path:
    """NIH ChestX-ray14: 1-4 images per patient over three archives, 30 % of patients in the test list, 14 findings
    (No Finding for about 40 % of images), radiologist boxes on 60 test images (boxes in 1024-px coordinates)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    entries, boxes, train_val, test = [], [], [], []
    for patient in range(1, patients + 1):
        in_test = rng.random() < 0.3
        for follow_up in range(int(rng.integers(1, 5))):
            name = f"{patient:08d}_{follow_up:03d}.png"
            _image(root / f"images_{1 + patient % 3:03d}" / "images" / name, 64)
            findings = [] if rng.random() < 0.4 else sorted(set(rng.choice(NIH_FINDINGS, int(rng.integers(1, 3)))))
            entries.append([name, "|".join(findings) or "No Finding", follow_up, patient, 50, "M",
                            "PA" if rng.random() < 0.6 else "AP", 1024, 1024, 0.14, 0.14])
            (test if in_test else train_val).append(name)
            boxed = [f for f in findings if f in BOX_FINDINGS]
            if in_test and boxed and sum(1 for row in boxes if row[0] == name) == 0 and len(boxes) < 80:
                for finding in boxed:
                    x, y = rng.uniform(100, 600, 2)
                    boxes.append([name, "Infiltrate" if finding == "Infiltration" else finding, x, y, 200.0, 180.0,
                                  "", "", ""])
    _write(root / "Data_Entry_2017_v2020.csv",
           ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
            "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"], entries)
    _write(root / "BBox_List_2017.csv", ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]", "", "", ""], boxes)
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    return root


def chexpert_tree(root: Path, patients: int = 300, valid_patients: int = 40, seed: int = 0) -> Path:
    """CheXpert-v1.0: ``train.csv`` (1-3 studies per patient, a frontal and sometimes a lateral view, labels 1.0 /
    0.0 / -1.0 / blank) and ``valid.csv`` (other patients, 0.0 / 1.0 only); paths relative to the root's parent."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT]
    for split, first, count in (("train", 1, patients), ("valid", 64541, valid_patients)):
        rows = []
        for patient in range(first, first + count):
            for study in range(1, int(rng.integers(2, 4))):
                views = [("view1_frontal", "Frontal", "AP")] + ([("view2_lateral", "Lateral", "")]
                                                                if rng.random() < 0.4 else [])
                values = rng.choice(["1.0", "0.0", "-1.0", ""] if split == "train" else ["1.0", "0.0"],
                                    size=len(CHEXPERT), p=[0.15, 0.35, 0.1, 0.4] if split == "train" else [0.2, 0.8])
                for view, orientation, projection in views:
                    relative = f"{root.name}/{split}/patient{patient:05d}/study{study}/{view}.jpg"
                    _image(root.parent / relative)
                    rows.append([relative, "Female", 60, orientation, projection, *values])
        _write(root / f"{split}.csv", header, rows)
    return root


def kermany_tree(root: Path, seed: int = 0) -> Path:
    """Kermany chest_xray: train / val / test folders of NORMAL and PNEUMONIA images with the released names; as in
    the public release, some ``personN`` ids of the val and test pneumonia images recur from train."""
    rng = np.random.default_rng(seed)
    person = 0
    train_persons: list[int] = []
    for split, count in (("train", 200), ("val", 16), ("test", 60)):
        for index in range(count):
            person += 1
            if rng.random() < 0.3:
                _image(root / split / "NORMAL" / f"IM-{person:04d}-0001.jpeg")
                continue
            kind = "bacteria" if rng.random() < 0.6 else "virus"
            patient = person if split == "train" or rng.random() < 0.7 else int(rng.choice(train_persons))
            train_persons += [patient] if split == "train" else []
            _image(root / split / "PNEUMONIA" / f"person{patient}_{kind}_{index}.jpeg")
    return root


def cohen_tree(root: Path, patients: int = 120, seed: int = 0) -> Path:
    """covid-chestxray-dataset: ``metadata.csv`` (X-ray and CT rows, several views and findings) and ``images/``."""
    rng = np.random.default_rng(seed)
    rows = []
    for patient in range(1, patients + 1):
        finding = rng.choice(["Pneumonia/Viral/COVID-19", "Pneumonia/Bacterial/Streptococcus",
                              "Pneumonia/Viral/SARS", "No Finding"], p=[0.6, 0.2, 0.1, 0.1])
        for number, (view, modality) in enumerate((("PA", "X-ray"), ("L", "X-ray"), ("Axial", "CT"))):
            name = f"{patient}-{number}.jpg"
            _image(root / "images" / name)
            rows.append([str(patient), finding, view, modality, "images", name])
    _write(root / "metadata.csv", ["patientid", "finding", "view", "modality", "folder", "filename"], rows)
    return root


def covidgr_tree(root: Path, per_class: int = 60) -> Path:
    """COVIDGR-1.0: ``P/`` and ``N/`` folders and a severity list for the positives."""
    levels = ("NORMAL-PCR+", "MILD", "MODERATE", "SEVERE")
    for folder in ("P", "N"):
        for index in range(per_class):
            _image(root / folder / f"{folder}{index:04d}.jpg")
    _write(root / "severity.csv", ["Name", "Severity"],
           [[f"P{index:04d}.jpg", levels[index % 4]] for index in range(per_class)])
    return root


def full_layout(base: Path) -> Path:
    """Every dataset the configs name, under ``base/data`` (the configs' roots are relative to ``base``)."""
    data = base / "data"
    nih_tree(data / "ChestX-ray14")
    chexpert_tree(data / "CheXpert-v1.0")
    kermany_tree(data / "chest_xray")
    cohen_tree(data / "covid-chestxray-dataset")
    covidgr_tree(data / "COVIDGR-1.0")
    return base


def _write(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
