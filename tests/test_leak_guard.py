"""No evaluation on training images by accident: the leak guard on real runs, and ``run --check`` on every shipped
config against generated trees in the full datasets' public layouts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from layouts import full_layout
from cxrlens.checkpoints import ClassifierCheckpoint, DataProvenance, load_checkpoint
from cxrlens.cli import app
from cxrlens.config import EvaluateConfig, PretrainConfig
from cxrlens.data.registry import open_sample
from cxrlens.data.roles import evaluated_indices, held_out_box_patients, pretrain_roles

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
runner = CliRunner()


def _evaluate(checkpoint: Path, cache: str, run: Path, *options: str) -> object:
    return runner.invoke(app, ["evaluate", str(checkpoint), "--cache", cache, "--run", str(run), "--bootstrap", "20",
                               "--gallery", "0", *options])


def test_evaluating_the_training_split_of_a_real_run_is_refused(tiny_classifier: Path, tmp_path: Path) -> None:
    (provenance,) = load_checkpoint(tiny_classifier, ClassifierCheckpoint).provenance
    refused = _evaluate(tiny_classifier, provenance.cache, tmp_path / "train", "--split", "train", "--no-report")
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    (line,) = [line for line in refused.output.splitlines() if line.startswith("error:")]
    trained = len(provenance.images["train"])
    assert f": {trained} of {trained} images (" in line and "in this split were used to train" in line
    assert "(train)" in line and "--allow-train-overlap" in line and not (tmp_path / "train" / "metrics.json").exists()

    held_out = _evaluate(tiny_classifier, provenance.cache, tmp_path / "test", "--split", "test", "--no-report")
    assert held_out.exit_code == 0, held_out.output
    overlap = json.loads((tmp_path / "test" / "metrics.json").read_text())["data_overlap"]
    assert overlap["allowed"] is False and all(entry["either"] == 0 for entry in overlap["roles"].values())


def test_allowed_overlap_is_recorded_and_the_report_says_so_in_red(tiny_classifier: Path, tmp_path: Path) -> None:
    (provenance,) = load_checkpoint(tiny_classifier, ClassifierCheckpoint).provenance
    result = _evaluate(tiny_classifier, provenance.cache, tmp_path, "--split", "val", "--allow-train-overlap")
    assert result.exit_code == 0, result.output
    assert "SCORED ANYWAY" in result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    val = metrics["data_overlap"]["roles"]["val"]
    assert metrics["data_overlap"]["allowed"] is True and val["either"] == val["of_images"] > 0 and val["supervised"]
    page = (tmp_path / "report.html").read_text()
    assert "class='leak'>NOT A HELD-OUT RESULT" in page and "model's val data" in page


def test_patients_of_two_datasets_with_the_same_id_are_different_people(data_root: Path) -> None:
    from cxrlens.data.provenance import overlap, role_hashes

    nih, cohen = open_sample(data_root, ["nih-sample"]), open_sample(data_root, ["cohen"])
    shared = {item.patient_id for item in nih.items} & {item.patient_id for item in cohen.items}
    assert not {item.patient for item in nih.items} & {item.patient for item in cohen.items}
    assert shared  # numeric ids: NIH's patient 17 and C19-Cohen's patient 17
    images, patients = role_hashes(nih.items, {"train": np.arange(len(nih))})
    trained = [DataProvenance(cache="c", dataset="nih", fingerprint="", images=images, patients=patients)]
    (found,) = overlap(trained, cohen.items, np.arange(len(cohen)))
    assert found.either == 0 and found.patients == 0


def test_pretraining_holds_out_the_boxed_test_patients_and_evaluation_scores_exactly_them(nih_bbox_root: Path,
                                                                                        data_root: Path) -> None:
    dataset = open_sample(data_root, ["nih-sample", "nih-bbox"])
    items, ready = dataset.items, np.arange(len(dataset.items))
    config = PretrainConfig(images="train", box_test_fraction=0.2)
    (roles,) = pretrain_roles([(items, ready)], config)
    held = held_out_box_patients(items, 0.2, config.train.seed)
    boxed_patients = {item.patient for item in items if item.boxes}
    assert 0.15 < len(held) / len(boxed_patients) < 0.25 and held <= boxed_patients
    assert not {items[i].patient for i in roles["pretrain"]} & held  # never seen, not even the pixels
    assert set(roles["cam-loss"]) <= set(roles["pretrain"]) and len(roles["cam-loss"]) > 100
    assert all(items[i].split == "train" or items[i].boxes for i in roles["pretrain"])  # images: train (+ CAM boxes)
    sample, boxed = open_sample(data_root, ["nih-sample"]), open_sample(data_root, ["nih-bbox"])
    parts = pretrain_roles([(sample.items, np.arange(len(sample))), (boxed.items, np.arange(len(boxed)))], config)
    assert not {part_items[i].patient for part_items, part in zip((sample.items, boxed.items), parts)
                for i in part["pretrain"]} & held  # a held-out patient's unboxed images in the other set stay out too
    halves = [boxed.items[:266], boxed.items[266:]]  # two pretraining sets, each evaluated alone: same patients held
    assert set().union(*(held_out_box_patients(half, 0.2, config.train.seed) for half in halves)) == held
    scored, _, _ = evaluated_indices(items, ready, EvaluateConfig(box_test_fraction=0.2))
    assert {items[i].patient for i in scored if items[i].boxes} == held
    assert not {items[i].patient for i in scored} & {items[i].patient for i in roles["cam-loss"]}

def test_linear_eval_refuses_test_images_whose_boxes_trained_the_encoder(tmp_path: Path, data_root: Path) -> None:
    from cxrlens.data.cache import prepare_cache
    from cxrlens.ssl import pretrain

    nih = open_sample(data_root, ["nih-sample", "nih-bbox"])
    nih.items[:] = [*nih.items[:200], *nih.items[-120:]]  # official train_val images and boxed test images
    boxed = prepare_cache(nih, tmp_path / "nih", size=32, workers=2)
    alone = prepare_cache(open_sample(data_root, ["nih-bbox"]), tmp_path / "boxed", size=32, workers=2)
    empty = runner.invoke(app, ["linear-eval", "--random-init", "resnet18", "--cache", str(alone.directory), "--run",
                                str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "empty training (0)" in empty.output  # all in the test list: one line, no crash
    quick = {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 1, "num_workers": 0, "accelerator": "cpu"}
    config = PretrainConfig(method={"name": "byol-cam", "boxed_per_batch": 2, "hidden": 16, "dim": 8},
                            encoder={"backbone": "resnet18"}, box_test_fraction=0.0, train=quick)
    encoder = pretrain([boxed.directory], tmp_path / "pretrain", config, show_progress=False)["encoder"]
    arguments = ["linear-eval", "--encoder", encoder, "--cache", str(boxed.directory), "--bootstrap", "10",
                 "--folds", "2"]
    refused = runner.invoke(app, [*arguments, "--run", str(tmp_path / "refused")])
    assert refused.exit_code == 2, refused.output
    (line,) = [line for line in refused.output.splitlines() if line.startswith("error:")]
    assert "in this split were used to train" in line and "(cam-loss)" in line
    allowed = runner.invoke(app, [*arguments, "--run", str(tmp_path / "allowed"), "--allow-train-overlap"])
    assert allowed.exit_code == 0, allowed.output
    assert "SCORED ANYWAY" in allowed.output
    recorded = json.loads((tmp_path / "allowed" / "metrics.json").read_text())["data_overlap"]
    assert recorded["allowed"] and recorded["roles"]["cam-loss"]["either"] >= 120  # every boxed test image


def test_a_resume_on_other_images_is_refused(tmp_path: Path, data_root: Path) -> None:
    from cxrlens.config import ModelConfig, SplitConfig, TrainConfig
    from cxrlens.data.cache import prepare_cache
    from cxrlens.train.supervised import train_supervised

    nih = open_sample(data_root, ["nih-sample"])
    nih.items[:] = nih.items[:120]
    cache = prepare_cache(nih, tmp_path / "cache", size=32, workers=2).directory
    train = TrainConfig(epochs=1, batch_size=16, accumulate=1, num_workers=0, accelerator="cpu", loss="bce",
                        max_steps_per_epoch=1, scheduler="none")
    run = tmp_path / "run"
    train_supervised(cache, run, ModelConfig(backbone="resnet18"), train, show_progress=False)
    longer = train.model_copy(update={"epochs": 2})
    with pytest.raises(ValueError, match="was started on other images than these settings select"):
        train_supervised(cache, run, ModelConfig(backbone="resnet18"), longer, split=SplitConfig(val_fraction=0.3),
                         resume=True, show_progress=False)
    summary = train_supervised(cache, run, ModelConfig(backbone="resnet18"), longer, resume=True, show_progress=False)
    assert len(summary["history"]) == 2  # the same settings resume


@pytest.fixture(scope="module")
def full_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return full_layout(tmp_path_factory.mktemp("full-layout"))


@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_every_shipped_config_passes_run_check_on_the_full_layout(config: Path, full_tree: Path, data_root: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(full_tree)
    result = runner.invoke(app, ["run", str(config), "--check", "--data-root", str(data_root)])
    assert result.exit_code == 0, result.output
    assert "every step checked, no problem" in result.output
    assert not list(full_tree.glob("cache")) and not list(full_tree.glob("runs"))  # nothing prepared or trained


def _leaky(config: str, old: str, new: str, folder: Path) -> Path:
    text = (Path(__file__).parents[1] / "configs" / config).read_text()
    assert old in text
    path = folder / config
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize(("config", "old", "new", "roles"), [
    ("paper003-resnet50.yaml", "checkpoint: standard, split: test", "checkpoint: standard, split: val", "(val)"),
    ("paper003-resnet50.yaml", "checkpoint: multires-pcm, split: test", "checkpoint: multires-pcm, split: train",
     "(refine, train)"),
    ("paper000-ssl-camloss-ft.yaml", "split: test, box_test_fraction: 0.2,", "split: test,", "(cam-loss)"),
])
def test_run_check_refuses_an_evaluation_on_training_images(config: str, old: str, new: str, roles: str,
                                                            full_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(full_tree)
    result = runner.invoke(app, ["run", str(_leaky(config, old, new, full_tree)), "--check"])
    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "problem(s) before anything ran" in line and "in this split were used to train" in line and roles in line
    assert not (full_tree / "runs").exists()


def test_run_check_accepts_an_overlap_that_is_asked_for_and_says_so(full_tree: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(full_tree)
    path = _leaky("paper003-resnet50.yaml", "checkpoint: standard, split: test",
                  "checkpoint: standard, split: val, allow_train_overlap: true", full_tree)
    result = runner.invoke(app, ["run", str(path), "--check"])
    # standard-eval now scores other images than the evaluations it is compared with: the compare steps say so
    assert result.exit_code == 2 and "must evaluate the same images" in " ".join(result.output.split())
    path.write_text(re.sub(r"  - \{kind: compare.*?\}\n", "", path.read_text(), flags=re.DOTALL))
    result = runner.invoke(app, ["run", str(path), "--check"])
    assert result.exit_code == 0, result.output
    assert "scored anyway" in " ".join(result.output.split())

