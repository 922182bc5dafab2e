"""Kermany's official split shares patients (its ``personN`` ids recur between ``train/`` and ``test/``): each split
mode gives the documented splits and counts, and no command ends in a traceback.

The tree is the public layout built from real Kermany radiographs: the sample's pneumonia and normal images as
``train/``, other real images (from the second root) as ``val/`` and ``test/``, some of them named with the
``personN`` ids of training patients, as in the public release.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cxrlens.cli import app
from cxrlens.data import KermanyPneumonia
from cxrlens.data.splits import SplitLeakError, official_parts, shared_patients, split_by_patient

runner = CliRunner()
SHARED_TEST, NEW_TEST, TEST_NORMAL, SHARED_VAL = 12, 20, 15, 2


@pytest.fixture(scope="module")
def kermany_release(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """``chest_xray/{train,val,test}`` of real images, with recurring training ``personN`` ids in val and test."""
    root = tmp_path_factory.mktemp("kermany-release") / "chest_xray"
    sample, more = data_root / "kermany-pneumonia" / "chest_xray" / "train", data_root / "kermany-pneumonia-more" / "chest_xray" / "train"
    pneumonia = sorted((sample / "PNEUMONIA").glob("*.jpeg"))[:150]
    for folder, files in (("PNEUMONIA", pneumonia), ("NORMAL", sorted((sample / "NORMAL").glob("*.jpeg"))[:60])):
        (root / "train" / folder).mkdir(parents=True)
        for path in files:
            shutil.copy(path, root / "train" / folder / path.name)
    persons = sorted({path.name.split("_")[0] for path in pneumonia})
    others = iter(sorted((more / "PNEUMONIA").glob("*.jpeg")))
    names = ([f"{person}_bacteria_{9000 + k}.jpeg" for k, person in enumerate(persons[:SHARED_TEST])]
             + [f"person{90000 + k}_virus_{k}.jpeg" for k in range(NEW_TEST)])
    _copy(others, root / "test" / "PNEUMONIA", names)
    _copy(iter(sorted((more / "NORMAL").glob("*.jpeg"))[:TEST_NORMAL]), root / "test" / "NORMAL",
          [f"NORMAL9-IM-{k:04d}-0001.jpeg" for k in range(TEST_NORMAL)])
    _copy(others, root / "val" / "PNEUMONIA", [f"{person}_virus_{8000 + k}.jpeg"
                                               for k, person in enumerate(persons[-SHARED_VAL:])]
          + ["person95000_bacteria_1.jpeg", "person95001_bacteria_1.jpeg"])
    normals = iter(sorted((more / "NORMAL").glob("*.jpeg"))[TEST_NORMAL:])
    _copy(normals, root / "val" / "NORMAL", ["NORMAL8-IM-0001-0001.jpeg", "NORMAL8-IM-0002-0001.jpeg"])
    return root


def _copy(sources, folder: Path, names: list[str]) -> None:  # noqa: ANN001
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(next(sources), folder / name)


@pytest.fixture(scope="module")
def release_cache(tmp_path_factory: pytest.TempPathFactory, kermany_release: Path) -> Path:
    out = tmp_path_factory.mktemp("kermany-cache") / "cache"
    result = runner.invoke(app, ["data", "prepare", "kermany", str(kermany_release), "--out", str(out), "--size", "32",
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    return out


def _patients(items, indices) -> set[str]:  # noqa: ANN001
    return {items[int(i)].patient for i in indices}


def test_each_split_mode_gives_the_documented_splits(kermany_release: Path) -> None:
    items = KermanyPneumonia(kermany_release).items
    lists = official_parts(items)
    pairs = {(pair.first, pair.second): pair for pair in shared_patients(items, lists)}
    assert (pairs["train", "test"].patients, pairs["train", "test"].second_images) == (SHARED_TEST, SHARED_TEST)
    assert pairs["train", "val"].patients == SHARED_VAL and pairs["val", "test"].patients == 0
    in_test = _patients(items, lists["test"])
    train_images_of_test_patients = [i for i in lists["train"] if items[i].patient in in_test]
    assert len(train_images_of_test_patients) >= SHARED_TEST

    official = split_by_patient(items, mode="official")  # as released: every list kept, shared patients reported
    assert np.array_equal(official.test, lists["test"]) and np.array_equal(official.val, lists["val"])
    assert len(official.released) == SHARED_TEST + SHARED_VAL
    summary = official.summary(items)
    assert {tuple(entry["splits"]): entry["patients"] for entry in summary["shared"]}[("train", "test")] == SHARED_TEST
    assert "12 patients in train and test" in official.warning(items)

    disjoint = split_by_patient(items)  # the default: official test whole, its patients' training images dropped
    assert np.array_equal(disjoint.test, lists["test"])
    assert set(disjoint.dropped) == set(train_images_of_test_patients) and disjoint.dropped_from == "train"
    assert not _patients(items, np.union1d(disjoint.train, disjoint.val)) & in_test
    moved = [i for i in lists["val"] if items[i].patient in _patients(items, lists["train"])]
    assert len(moved) == SHARED_VAL and set(moved) <= set(disjoint.train)  # val patients also in train train
    assert not _patients(items, disjoint.train) & _patients(items, disjoint.val)
    dropped = len(train_images_of_test_patients)
    assert f"left out {dropped} images ({dropped} train) of {SHARED_TEST} patients" in disjoint.warning(items)
    assert np.array_equal(disjoint.moved, np.sort(moved)) and "moved 2 official val images" in disjoint.warning(items)

    from_test = split_by_patient(items, drop_shared="test")  # or keep training whole and drop from test
    assert len(from_test.test) == len(lists["test"]) - SHARED_TEST and from_test.dropped_from == "test"
    assert set(from_test.train) | set(from_test.val) == set(lists["train"]) | set(lists["val"])

    redrawn = split_by_patient(items, mode="patient", test_fraction=0.2, seed=1)  # lists ignored
    parts = [_patients(items, part) for part in redrawn.as_dict().values()]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sum(map(len, redrawn.as_dict().values())) == len(items) and not len(redrawn.dropped)
    assert not np.array_equal(redrawn.test, lists["test"])
    for splits in (disjoint, from_test, redrawn):
        assert not splits.released
    # a release without a test list: the drawn test set never takes a patient the lists share (train and val here)
    untested = [item for item in items if item.split != "test"]
    for seed in range(5):
        drawn = split_by_patient(untested, mode="official", seed=seed)
        assert not _patients(untested, drawn.test) & drawn.released and drawn.released
    # dropping every official test patient from test would leave none: one clear error, not a silent redraw
    only_shared = [item for item in items if item.split != "test" or item.patient in _patients(items, lists["train"])]
    with pytest.raises(ValueError, match="leaves no test set"):
        split_by_patient(only_shared, drop_shared="test")
    with pytest.raises(SplitLeakError, match="--splits official-disjoint or --splits patient"):
        from cxrlens.data.splits import check_patient_disjoint
        check_patient_disjoint(items, lists)


def test_data_inspect_shows_the_shared_patients_with_every_option(kermany_release: Path) -> None:
    for options in ([], ["--splits", "official"], ["--splits", "official-disjoint", "--drop-shared", "test"],
                    ["--splits", "patient"]):
        result = runner.invoke(app, ["data", "inspect", "kermany", str(kermany_release), *options])
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        row = next(line for line in result.output.splitlines() if "train / test" in line)
        patients, _, test_images = (cell.strip() for cell in row.split("│")[2:5])
        assert (patients, test_images) == (str(SHARED_TEST), str(SHARED_TEST))
        assert "splits (" + (options[1] if options else "official-disjoint") + ")" in result.output
    result = runner.invoke(app, ["data", "inspect", "kermany", str(kermany_release), "--splits", "nonsense"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def _compact(text: str) -> str:
    return "".join(character for character in text if character.isalnum())


def _train(cache: Path, run: Path, *options: str) -> None:
    result = runner.invoke(app, ["train-supervised", "--cache", str(cache), "--run", str(run), "--backbone", "resnet18",
                                 "--epochs", "1", "--batch-size", "16", "--max-steps-per-epoch", "2", "--device", "cpu",
                                 *options])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output


def _evaluate(checkpoint: Path, cache: Path, run: Path, *options: str):  # noqa: ANN202
    return runner.invoke(app, ["evaluate", str(checkpoint), "--cache", str(cache), "--run", str(run), "--bootstrap",
                               "20", "--gallery", "1", *options])


def test_every_command_takes_each_split_option_on_the_release(tmp_path: Path, release_cache: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    _train(release_cache, tmp_path / "as-released", "--splits", "official")
    as_released = tmp_path / "as-released" / "checkpoints" / "best.ckpt"
    result = _evaluate(as_released, release_cache, tmp_path / "eval-official", "--splits", "official")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval-official" / "metrics.json").read_text())
    shared = {tuple(entry["splits"]): entry for entry in metrics["splits"]["shared"]}
    assert metrics["splits"]["mode"] == "official" and shared["train", "test"]["patients"] == SHARED_TEST
    assert metrics["images"] == SHARED_TEST + NEW_TEST + TEST_NORMAL
    assert metrics["data_overlap"]["roles"]["train"]["patients"] > 0  # reported, not refused
    page = (tmp_path / "eval-official" / "report.html").read_text()
    assert "share patients, kept as released" in page and "NOT A NEW-PATIENT RESULT" in page
    assert "--allow-train-overlap scored" not in page
    assert any("12 patients in train and test" in record.getMessage() for record in caplog.records)
    # the same model scored on the default (official-disjoint) test set: its patients were trained on - refused
    result = _evaluate(as_released, release_cache, tmp_path / "eval-refused")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "were used to train" in result.output and len(result.output.strip().splitlines()) == 1
    assert "splits official, drop_shared train" in result.output  # how it was trained: score it the same way

    _train(release_cache, tmp_path / "disjoint")  # the default
    result = _evaluate(tmp_path / "disjoint" / "checkpoints" / "best.ckpt", release_cache, tmp_path / "eval-disjoint")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval-disjoint" / "metrics.json").read_text())
    assert metrics["splits"]["dropped"]["patients"] == SHARED_TEST and metrics["images"] == SHARED_TEST + NEW_TEST + TEST_NORMAL
    assert not any(entry["either"] for entry in metrics["data_overlap"]["roles"].values())
    assert "No patient is in two splits" in (tmp_path / "eval-disjoint" / "report.html").read_text()

    _train(release_cache, tmp_path / "patient", "--splits", "patient")
    result = _evaluate(tmp_path / "patient" / "checkpoints" / "best.ckpt", release_cache, tmp_path / "eval-patient",
                       "--splits", "patient")
    assert result.exit_code == 0, result.output

    for options in (["--splits", "official"], ["--splits", "official-disjoint", "--drop-shared", "test"],
                    ["--splits", "patient"]):
        run = tmp_path / f"linear-{'-'.join(options[1::2])}"
        result = runner.invoke(app, ["linear-eval", "--random-init", "resnet18", "--cache", str(release_cache),
                                     "--run", str(run), "--bootstrap", "20", "--folds", "2", "--device", "cpu",
                                     *options])
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["splits"]["mode"] == options[1]
        if options[1] == "official":
            assert metrics["test_images"] == SHARED_TEST + NEW_TEST + TEST_NORMAL
        if "test" in options:
            assert metrics["test_images"] == NEW_TEST + TEST_NORMAL and metrics["splits"]["dropped"]["from"] == "test"

    result = runner.invoke(app, ["refine", str(tmp_path / "disjoint" / "checkpoints" / "best.ckpt"), "--cache",
                                 str(release_cache), "--run", str(tmp_path / "seam"), "--epochs", "1", "--batch-size",
                                 "8", "--max-steps-per-epoch", "1", "--device", "cpu", "--splits", "official-disjoint"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output


def test_finetune_and_run_take_the_split_option(tmp_path: Path, release_cache: Path, kermany_release: Path) -> None:
    pretrain = ["pretrain", "--cache", str(release_cache), "--run", str(tmp_path / "pt"), "--method", "simclr",
                "--backbone", "resnet18", "--batch-size", "16", "--max-steps-per-epoch", "1", "--num-workers", "0",
                "--device", "cpu", "--epochs", "1"]
    assert runner.invoke(app, pretrain).exit_code == 0
    result = runner.invoke(app, ["finetune", "--encoder", str(tmp_path / "pt" / "encoder.ckpt"), "--cache",
                                 str(release_cache), "--run", str(tmp_path / "ft"), "--freeze", "all", "--epochs", "1",
                                 "--batch-size", "16", "--max-steps-per-epoch", "1", "--device", "cpu",
                                 "--splits", "official-disjoint", "--drop-shared", "test"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output

    def config(train_splits: str, test_splits: str) -> Path:
        path = tmp_path / f"{train_splits}-{test_splits}.yaml"
        path.write_text(f"""name: kermany-{train_splits}-{test_splits}
paper: "001"
description: Kermany as released or patient-disjoint
data:
  cell: {{dataset: kermany, roots: ["{kermany_release}"], size: 32}}
steps:
  - {{kind: train, name: cell, data: cell, model: {{backbone: resnet18}}, split: {{splits: {train_splits}}}}}
  - {{kind: evaluate, name: cell-test, data: cell, checkpoint: cell, splits: {test_splits}}}
""")
        return path

    result = runner.invoke(app, ["run", str(config("official", "official")), "--check"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "12patientsintrainandtest" in _compact(result.output)  # a note of the plan (table cells wrap), not a refusal
    result = runner.invoke(app, ["run", str(config("official", "official-disjoint")), "--check"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "were used to train" in result.output
    result = runner.invoke(app, ["run", str(config("official-disjoint", "official-disjoint")), "--check"])
    assert result.exit_code == 0, result.output
    old = tmp_path / "old.yaml"
    old.write_text(config("patient", "patient").read_text().replace("splits: patient}}", "official: false}}", 1))
    result = runner.invoke(app, ["run", str(old), "--check"])
    assert result.exit_code == 2 and "replaced by splits" in result.output and "Traceback" not in result.output
