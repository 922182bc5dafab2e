"""The papers' protocols as config fields: the COVIDGR reader, binary tasks, paper 003's training subset, paper 004's
probability rule and threshold sweep, label harmonisation across datasets, and the generated deviations table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from layouts import CHEXPERT, covidgr_tree
from cxrlens.cli import app
from cxrlens.config import SplitConfig, TaskConfig
from cxrlens.data.covidgr import COVIDGR
from cxrlens.data.labels import canonical, match_classes
from cxrlens.data.preprocess import pixel_statistics
from cxrlens.data.records import DatasetFormatError
from cxrlens.data.registry import open_dataset, open_sample
from cxrlens.data.roles import training_roles
from cxrlens.data.tasks import binary_task
from cxrlens.deviations import render
from cxrlens.paths import bundled_configs
from cxrlens.explain.boxes import binarize

runner = CliRunner()


def test_covidgr_reader_on_the_public_layout(tmp_path: Path) -> None:
    root = covidgr_tree(tmp_path / "COVIDGR-1.0", per_class=12)
    (root / "N" / "P0003.jpg").write_bytes((root / "P" / "P0003.jpg").read_bytes())  # one name in both folders
    (root / "N" / "N0001.jpg").write_bytes(b"")  # an empty file
    with open(root / "severity.csv", "a") as handle:
        handle.write("P9999.jpg,SEVERE\n")  # a severity row naming no image
    dataset = open_dataset("covidgr", [tmp_path])  # the folder holding COVIDGR-1.0 works too
    assert dataset.classes == ("COVID-19",)
    names = {item.path.name: item for item in dataset.items}
    assert "P0003.jpg" not in names and "N0001.jpg" not in names and len(names) == 12 + 12 - 2
    assert sum(item.labels[0] for item in dataset.items) == 11
    assert names["P0000.jpg"].meta["severity"] == "NORMAL-PCR+" and names["P0002.jpg"].meta["severity"] == "MODERATE"
    assert all("severity" not in item.meta for item in dataset.items if item.labels[0] == 0)
    assert len({item.patient_id for item in dataset.items}) == len(dataset.items)  # one radiograph per patient
    assert set(dataset.problems.counts) == {"file names in both P/ and N/ (left out of both)",
                                            "rows whose image file is empty (0 bytes)",
                                            "severity rows naming no image here"}
    with pytest.raises(DatasetFormatError, match="no P/ or N/ folder"):
        COVIDGR(tmp_path / "elsewhere")


def test_nih_pneumonia_tasks_on_real_images(data_root: Path) -> None:
    dataset = open_sample(data_root, ["nih-sample", "nih-bbox"])
    column = dataset.classes.index("Pneumonia")
    task = binary_task(dataset, TaskConfig(positive="Pneumonia"))
    positives = [item for item in task.items if item.labels[0] == 1]
    controls = [item for item in task.items if item.labels[0] == 0]
    assert task.classes == ("Pneumonia",) and len(positives) == sum(item.labels[column] == 1 for item in dataset.items)
    healthy = sum(1 for item in dataset.items if not item.labels.any())
    assert 0 < len(controls) <= healthy and not {i.patient_id for i in positives} & {i.patient_id for i in controls}
    assert all(box.finding == "Pneumonia" for item in task.items for box in item.boxes)
    assert {item.split for item in task.items} == {"train", "test"}  # the official lists travel with the items
    matched = binary_task(dataset, TaskConfig(positive="Pneumonia", matched=True, seed=3))
    matched_controls = [item for item in matched.items if item.labels[0] == 0]
    assert len(matched_controls) == len(positives) and len({i.patient_id for i in matched_controls}) == len(positives)
    assert matched.items == binary_task(dataset, TaskConfig(positive="Pneumonia", matched=True, seed=3)).items
    with pytest.raises(ValueError, match="no class 'Fracture'"):
        binary_task(dataset, TaskConfig(positive="Fracture"))


def test_paper_003_training_set_keeps_5000_healthy_images_and_the_whole_test_list(data_root: Path) -> None:
    dataset = open_sample(data_root, ["nih-sample", "nih-bbox"])
    items, ready = dataset.items, np.arange(len(dataset.items))
    full = training_roles(items, dataset.classes, ready, SplitConfig(), seed=0)
    subset = training_roles(items, dataset.classes, ready, SplitConfig(no_finding_images=50), seed=0)
    healthy = lambda indices: sum(1 for i in indices if not items[i].labels.any())  # noqa: E731
    assert healthy(np.concatenate([subset["train"], subset["val"]])) == 50
    assert healthy(np.concatenate([full["train"], full["val"]])) > 300
    sick = lambda indices: {int(i) for i in indices if items[i].labels.any()}  # noqa: E731
    assert sick(np.concatenate([subset["train"], subset["val"]])) == sick(np.concatenate([full["train"], full["val"]]))
    assert all(items[i].split == "train" for i in np.concatenate([subset["train"], subset["val"]]))


def test_validation_share_is_drawn_by_patient_from_the_training_part(data_root: Path) -> None:
    dataset = open_sample(data_root, ["nih-sample"])
    items, ready = dataset.items, np.arange(len(dataset.items))
    roles = training_roles(items, dataset.classes, ready, SplitConfig(val_fraction=0.25), seed=0)
    patients = {name: {items[i].patient_id for i in roles[name]} for name in ("train", "val")}
    assert not patients["train"] & patients["val"]
    share = len(patients["val"]) / (len(patients["train"]) + len(patients["val"]))
    assert 0.2 < share < 0.3


def test_probability_rule_thresholds_the_map_itself() -> None:
    heatmap = np.array([[0.05, 0.2], [0.45, 0.9]])
    assert binarize(heatmap, 0.4, "probability").tolist() == [[0, 0], [1, 1]]
    assert binarize(heatmap * 0.1, 0.4, "probability").sum() == 0  # unlike min-max rules, a faint map keeps nothing
    assert binarize(heatmap * 0.1, 0.7, "relative").sum() == 1


def test_training_images_mean_and_std_are_measured() -> None:
    store = np.zeros((4, 8, 8), np.uint8)
    store[1] = 255
    store[3, :4] = 255
    stats = pixel_statistics([(store, np.array([0, 1])), (store, np.array([3]))])
    assert stats.mean == pytest.approx((0 + 1 + 0.5) / 3, abs=1e-6)
    assert stats.std == pytest.approx(np.sqrt((0 + 1 + 0.5) / 3 - stats.mean ** 2), abs=1e-6)


def test_label_harmonisation_table() -> None:
    assert canonical("Pleural Effusion") == "Effusion" and canonical("Infiltrate") == "Infiltration"
    assert canonical("Lung Lesion") == "Lung Lesion"  # a mass or a nodule or more: never merged
    match = match_classes(CHEXPERT, ("Atelectasis", "Effusion", "Mass", "Pneumonia"))
    assert [(name, CHEXPERT[model], data) for name, model, data in match.pairs] == [
        ("Atelectasis", "Atelectasis", 0), ("Effusion", "Pleural Effusion", 1), ("Pneumonia", "Pneumonia", 3)]
    assert match.data_only == ("Mass",) and "Lung Lesion" in match.model_only
    assert match.model_column("Pleural Effusion") == match.model_column("Effusion") == CHEXPERT.index("Pleural Effusion")


def _chexpert_from_real_nih(base: Path, data_root: Path, count: int = 120) -> Path:
    """A CheXpert-layout tree whose images are real NIH sample radiographs, labelled in CheXpert's names."""
    nih = open_sample(data_root, ["nih-sample"])
    to_chexpert = {"Effusion": "Pleural Effusion"}
    root = base / "CheXpert-v1.0-small"
    rows = []
    for number, item in enumerate([item for item in nih.items if item.split == "train"][:count], 1):
        relative = f"{root.name}/train/patient{number:05d}/study1/view1_frontal.jpg"
        (base / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.open(item.path).convert("L").save(base / relative)
        findings = {to_chexpert.get(nih.classes[c], nih.classes[c]) for c in np.flatnonzero(item.labels)}
        labels = ["1.0" if name in findings or (name == "No Finding" and not findings) else "" for name in CHEXPERT]
        rows.append([relative, "Female", 60, "Frontal", "PA", *labels])
    pd.DataFrame(rows, columns=["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT]).to_csv(
        root / "train.csv", index=False)
    return root


def test_a_chexpert_trained_model_is_scored_on_real_nih_boxes_through_the_shared_names(tmp_path: Path,
                                                                                      data_root: Path) -> None:
    chexpert = _chexpert_from_real_nih(tmp_path, data_root)
    for dataset, root, folder in (("chexpert", str(chexpert), "chexpert-cache"), ("sample", "nih-bbox", "nih-boxes")):
        result = runner.invoke(app, ["data", "prepare", dataset, root, "--out", str(tmp_path / folder), "--size", "64",
                                     "--workers", "2", "--data-root", str(data_root)])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train-supervised", "--cache", str(tmp_path / "chexpert-cache"), "--run",
                                 str(tmp_path / "train"), "--backbone", "resnet18", "--epochs", "1", "--batch-size",
                                 "16", "--max-steps-per-epoch", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "train" / "checkpoints" / "best.ckpt"), "--cache",
                                 str(tmp_path / "nih-boxes"), "--run", str(tmp_path / "eval"), "--bootstrap", "20",
                                 "--gallery", "2", "--no-report", "--box-rule", "probability", "--raw-maps",
                                 "--threshold-sweep", "0.1,0.4,0.8"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    shared = {"Atelectasis", "Cardiomegaly", "Effusion", "Pneumonia", "Pneumothorax", "Consolidation", "Edema"}
    assert set(metrics["classification"]) == shared  # CheXpert's "Pleural Effusion" meets NIH's "Effusion"
    assert {"Infiltration", "Mass", "Nodule", "Emphysema"} <= set(metrics["unscored"]["data_only"])
    assert {"Lung Lesion", "Lung Opacity", "No Finding"} <= set(metrics["unscored"]["model_only"])
    localized = set(metrics["localization"]["model"]) - {"mean"}
    assert localized == {"Atelectasis", "Cardiomegaly", "Effusion", "Pneumonia", "Pneumothorax"}  # 5 of 8 box findings
    assert metrics["box_rule"]["rule"] == "probability" and metrics["normalize_maps"] is False
    assert set(metrics["localization"]["threshold_sweep"]) == {"0.1", "0.4", "0.8"}
    assert all("acc@0.5" in entry["comparison"] for entry in metrics["localization"]["threshold_sweep"].values())
    header = (tmp_path / "eval" / "predictions.csv").read_text().splitlines()[0]
    assert "prob:Effusion" in header and "Pleural Effusion" not in header


def test_docs_deviations_is_generated_from_the_code_and_configs() -> None:
    committed = (Path(__file__).parents[1] / "docs" / "deviations.md").read_text()
    assert committed == render(bundled_configs()), "docs/deviations.md is stale: run make docs"
    assert "| 004 | `paper004-lse-lba.yaml` | per-class tau |" in committed
    assert "ModelConfig.head_hidden" in committed  # a value paper 001 does not give
