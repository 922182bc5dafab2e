"""Dataset readers on the real sample sets (NIH with/without boxes, Kermany, Cohen) and a
generated CheXpert tree in the exact public layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlens.data import (
    CHEXPERT_CLASSES,
    NIH_CLASSES,
    CheXpert,
    CohenCovid,
    DatasetFormatError,
    ImageFolder,
    KermanyPneumonia,
    NIHChestXray14,
    combine,
    open_dataset,
)
from cxrlens.data.kermany import parse_kermany_name
from synthetic import gradient, write_dicom

# --- NIH ChestX-ray14 ------------------------------------------------------------------------


def test_nih_boxes_scaled_from_1024_to_stored_512(nih_bbox_root: Path) -> None:
    dataset = NIHChestXray14(nih_bbox_root)
    assert len(dataset) == 532 and dataset.classes == NIH_CLASSES
    assert sum(len(item.boxes) for item in dataset.items) == 592
    assert len({item.patient_id for item in dataset.items}) == 436
    raw = pd.read_csv(nih_bbox_root / "BBox_List_2017.csv")
    first = raw.iloc[0]
    item = next(item for item in dataset.items if item.path.name == first["Image Index"])
    box = next(box for box in item.boxes if abs(box.x - first.iloc[2] * 0.5) < 1e-6)
    assert box.y == pytest.approx(first.iloc[3] * 0.5) and box.w == pytest.approx(first.iloc[4] * 0.5)
    assert {box.finding for item in dataset.items for box in item.boxes} <= set(NIH_CLASSES)
    assert "Infiltration" in {box.finding for item in dataset.items for box in item.boxes}  # from "Infiltrate"
    for item in dataset.items:  # every box lies on the 512-px image
        for box in item.boxes:
            assert 0 <= box.x and box.x + box.w <= 512.5 and 0 <= box.y and box.y + box.h <= 512.5
        assert item.labels.sum() >= 1 and item.split == "test"  # all abnormal, all in the official test list


def test_nih_sample_without_boxes(nih_sample_root: Path) -> None:
    dataset = NIHChestXray14(nih_sample_root)
    assert len(dataset) == 1139
    assert not any(item.boxes for item in dataset.items)
    no_finding = sum(item.labels.sum() == 0 for item in dataset.items)
    assert no_finding == 486
    assert {item.split for item in dataset.items} <= {"train", "test"}
    assert {item.view for item in dataset.items} <= {"PA", "AP"}


def test_nih_only_boxed_and_combined_folders(nih_bbox_root: Path, nih_sample_root: Path) -> None:
    boxed = NIHChestXray14(nih_bbox_root, only_boxed=True)
    assert len(boxed) == 532
    both = open_dataset("nih", [nih_bbox_root, nih_sample_root])
    assert len(both) == 532 + 1139 and both.classes == NIH_CLASSES


def _mini_nih(tmp_path: Path, nih_bbox_root: Path, names: list[str]) -> Path:
    """A copy of a few real NIH rows in the full download's images_NNN/images/ layout."""
    root = tmp_path / "nih"
    (root / "images_001" / "images").mkdir(parents=True)
    entries = pd.read_csv(nih_bbox_root / "Data_Entry_2017_v2020.csv")
    entries[entries["Image Index"].isin(names)].to_csv(root / "Data_Entry_2017.csv", index=False)
    boxes = pd.read_csv(nih_bbox_root / "BBox_List_2017.csv")
    boxes[boxes["Image Index"].isin(names)].to_csv(root / "BBox_List_2017.csv", index=False)
    for name in names:
        shutil.copy(nih_bbox_root / "images" / name, root / "images_001" / "images" / name)
    return root


def test_nih_archive_layout_missing_and_empty_images(tmp_path: Path, nih_bbox_root: Path) -> None:
    names = sorted(p.name for p in (nih_bbox_root / "images").glob("*.png"))[:4]
    root = _mini_nih(tmp_path, nih_bbox_root, names)
    (root / "images_001" / "images" / names[0]).unlink()  # a row without its image
    (root / "images_001" / "images" / names[1]).write_bytes(b"")  # an empty file
    dataset = NIHChestXray14(root)
    assert len(dataset) == 2
    assert dataset.problems.counts == {
        "rows whose image file is missing": 1,
        "rows whose image file is empty (0 bytes)": 1,
    }
    assert names[0] in dataset.problems.summary()[0]


def test_nih_malformed_label_file_named(tmp_path: Path, nih_bbox_root: Path) -> None:
    names = sorted(p.name for p in (nih_bbox_root / "images").glob("*.png"))[:2]
    root = _mini_nih(tmp_path, nih_bbox_root, names)
    entries = pd.read_csv(root / "Data_Entry_2017.csv").drop(columns=["Patient ID"])
    entries.to_csv(root / "Data_Entry_2017.csv", index=False)
    with pytest.raises(DatasetFormatError, match=r"Data_Entry_2017\.csv: missing column\(s\) 'Patient ID'"):
        NIHChestXray14(root)


def test_nih_box_rows_with_bad_coordinates_reported(tmp_path: Path, nih_bbox_root: Path) -> None:
    names = sorted(p.name for p in (nih_bbox_root / "images").glob("*.png"))[:3]
    root = _mini_nih(tmp_path, nih_bbox_root, names)
    boxes = pd.read_csv(root / "BBox_List_2017.csv", dtype=str)
    boxes.iloc[0, 2] = "not-a-number"
    boxes.to_csv(root / "BBox_List_2017.csv", index=False)
    dataset = NIHChestXray14(root)
    assert dataset.problems.counts["box rows with invalid coordinates"] == 1


# --- Kermany ---------------------------------------------------------------------------------


def test_kermany_real_layout_with_missing_splits(kermany_root: Path) -> None:
    dataset = KermanyPneumonia(kermany_root)
    assert len(dataset) == 1564
    labels = dataset.label_matrix()[:, 0]
    assert int(labels.sum()) == 1162 and int((labels == 0).sum()) == 402
    subtypes = {item.meta["subtype"] for item in dataset.items}
    assert subtypes == {"bacteria", "virus", "normal"}
    assert {item.split for item in dataset.items} == {"train"}
    virus = sum(item.meta["subtype"] == "virus" for item in dataset.items)
    assert 350 < virus < 450


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("person1_bacteria_1.jpeg", ("person1", "bacteria")),
        ("person1000_virus_1681.jpeg", ("person1000", "virus")),
        ("IM-0115-0001.jpeg", ("IM-0115", "normal")),
        ("NORMAL2-IM-1067-0001.jpeg", ("NORMAL2-IM-1067", "normal")),
        ("IM-0640-0001-0001.jpeg", ("IM-0640", "normal")),
        ("holiday.jpeg", None),
    ],
)
def test_kermany_file_names(name: str, expected: tuple[str, str] | None) -> None:
    assert parse_kermany_name(name) == expected


def test_kermany_no_split_folder_is_clear(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="none of the split folders"):
        KermanyPneumonia(tmp_path)


# --- covid-chestxray-dataset -----------------------------------------------------------------


def test_cohen_task_filter_and_missing_files(cohen_root: Path) -> None:
    dataset = CohenCovid(cohen_root)
    frame = pd.read_csv(cohen_root / "metadata.csv", dtype=str, keep_default_na=False)
    assert dataset.excluded["modality CT"] == int((frame["modality"] == "CT").sum())
    assert all(item.view in ("PA", "AP", "AP Supine", "AP Erect") for item in dataset.items)
    assert not any(item.meta["finding"] in ("No Finding", "todo") for item in dataset.items)
    missing = dataset.problems.counts["rows whose image file is missing"]
    assert 0 < missing <= 10  # the sample's X-ray rows whose files were empty in the source
    positives = int(dataset.label_matrix().sum())
    assert positives > 0 and len(dataset) - positives > 0  # COVID-19 vs other pneumonia
    assert all(item.path.exists() for item in dataset.items)


# --- CheXpert (generated tree in the exact public layout) ------------------------------------

CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_CLASSES]


def _chexpert_tree(tmp_path: Path) -> Path:
    root = tmp_path / "CheXpert-v1.0-small"
    rows = {
        "train": [
            # patient, study, view, orientation, projection, labels as released (1.0 / 0.0 / -1.0 / blank)
            ("patient00001", 1, "view1_frontal", "Frontal", "AP", {"No Finding": "1.0", "Support Devices": "1.0"}),
            ("patient00002", 2, "view1_frontal", "Frontal", "AP", {"Edema": "-1.0", "Cardiomegaly": "1.0", "Lung Opacity": "0.0"}),
            ("patient00002", 1, "view2_lateral", "Lateral", "", {"Edema": "-1.0"}),
            ("patient00003", 1, "view1_frontal", "Frontal", "PA", {"Pleural Effusion": "1.0", "Fracture": "-1.0"}),
        ],
        "valid": [
            ("patient64541", 1, "view1_frontal", "Frontal", "AP", {"Cardiomegaly": "1.0"}),
        ],
    }
    for split, split_rows in rows.items():
        records = []
        for patient, study, view, orientation, projection, labels in split_rows:
            relative = f"CheXpert-v1.0-small/{split}/{patient}/study{study}/{view}.jpg"
            image_path = tmp_path / relative
            image_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(gradient(64, 52).astype(np.uint8)).save(image_path)
            fill = "0.0" if split == "valid" else ""
            record = {"Path": relative, "Sex": "Female", "Age": "68", "Frontal/Lateral": orientation, "AP/PA": projection}
            record.update({name: labels.get(name, fill) for name in CHEXPERT_CLASSES})
            records.append(record)
        pd.DataFrame(records, columns=CHEXPERT_HEADER).to_csv(root / f"{split}.csv", index=False)
    return root


def test_chexpert_uncertain_policies_and_views(tmp_path: Path) -> None:
    root = _chexpert_tree(tmp_path)
    edema = CHEXPERT_CLASSES.index("Edema")
    zeros = CheXpert(root)
    assert len(zeros) == 4  # lateral view dropped by default
    second = next(item for item in zeros.items if item.patient_id == "patient00002")
    assert second.labels[edema] == 0 and second.label_mask.all()
    assert second.labels[CHEXPERT_CLASSES.index("Cardiomegaly")] == 1 and second.view == "AP"
    ones = CheXpert(root, uncertain="ones")
    assert next(i for i in ones.items if i.patient_id == "patient00002").labels[edema] == 1
    ignore = CheXpert(root, uncertain="ignore")
    item = next(i for i in ignore.items if i.patient_id == "patient00002")
    assert not item.label_mask[edema] and item.label_mask.sum() == 13
    assert not np.isnan(ignore.label_matrix()).any()
    assert len(CheXpert(root, views="all")) == 5 and len(CheXpert(root, views="lateral")) == 1
    assert {item.split for item in zeros.items} == {"train", "test"}  # valid.csv is the test split
    everything = CheXpert(root, views="all").items  # every file is view1_frontal / view2_lateral: ids need more
    assert len({item.image_id for item in everything}) == 5
    assert "patient00002/study2/view1_frontal.jpg" in {item.image_id for item in everything}


def test_chexpert_bad_value_and_missing_column(tmp_path: Path) -> None:
    root = _chexpert_tree(tmp_path)
    frame = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    frame.loc[1, "Edema"] = "2.0"
    frame.to_csv(root / "train.csv", index=False)
    with pytest.raises(DatasetFormatError, match=r"train\.csv: 1 label value.*line 3, column 'Edema' = '2\.0'"):
        CheXpert(root)
    frame.drop(columns=["Frontal/Lateral"]).to_csv(root / "train.csv", index=False)
    with pytest.raises(DatasetFormatError, match="missing column"):
        CheXpert(root)
    with pytest.raises(ValueError, match="uncertain policy"):
        CheXpert(root, uncertain="maybe")  # type: ignore[arg-type]


# --- a user's own folder / CSV ---------------------------------------------------------------


def test_folder_of_mixed_files_unlabeled(tmp_path: Path, kermany_root: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for source in sorted((kermany_root / "chest_xray" / "train" / "NORMAL").glob("*.jpeg"))[:2]:
        shutil.copy(source, tmp_path / "a" / source.name)
    write_dicom(tmp_path / "a" / "b" / "scan", gradient(high=4095))  # extensionless DICOM
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / "empty.png").write_bytes(b"")
    dataset = ImageFolder(tmp_path)
    assert len(dataset) == 3 and dataset.classes == ()
    dicom = next(item for item in dataset.items if item.path.name == "scan")
    assert dicom.patient_id.startswith("dicom-") and "P001" not in dicom.patient_id  # the PatientID, pseudonymised
    assert dicom.meta.keys() == {"patient_id", "pseudonym_key", "source"} and dicom.meta["source"] == "folder"
    assert dataset.problems.counts == {"rows whose image file is empty (0 bytes)": 1}


def test_folder_csv_with_labels(tmp_path: Path) -> None:
    for name in ("x.png", "y.png", "z.png"):
        Image.fromarray(gradient().astype(np.uint8)).save(tmp_path / name)
    (tmp_path / "labels.csv").write_text("path,patient,Effusion,Mass\nx.png,p1,1,0\ny.png,p1,,1\nz.png,p2,-1,0\nmissing.png,p3,1,1\n")
    dataset = ImageFolder(csv=tmp_path / "labels.csv", label_columns=["Effusion", "Mass"], patient_column="patient")
    assert dataset.classes == ("Effusion", "Mass") and len(dataset) == 3
    np.testing.assert_array_equal(dataset.mask_matrix(), [[1, 1], [0, 1], [0, 1]])
    np.testing.assert_array_equal(dataset.label_matrix(), [[1, 0], [0, 1], [0, 0]])
    assert dataset.problems.counts == {"rows whose image file is missing": 1}


def test_combine_masks_foreign_classes(kermany_root: Path, cohen_root: Path) -> None:
    combined = combine([KermanyPneumonia(kermany_root), CohenCovid(cohen_root)])
    assert combined.classes == ("Pneumonia", "COVID-19")
    masks = combined.mask_matrix()
    sources = [item.meta["source"] for item in combined.items]
    assert all(masks[i].tolist() == ([True, False] if s == "kermany" else [False, True]) for i, s in enumerate(sources))
    assert any("cohen: rows whose image file is missing" in line for line in combined.problems.summary())
