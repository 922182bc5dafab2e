"""Experiment tracking (cxrlens.tracking): a tiny training run on real Kermany images, read back from the real
TensorBoard event files and the real local MLflow store; an evaluation's metrics and report as MLflow artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxrlens.cli import app
from cxrlens.data.cache import PreparedCache, prepare_cache
from cxrlens.data.registry import open_sample

runner = CliRunner()
TRAIN = ["--backbone", "resnet18", "--epochs", "2", "--batch-size", "16", "--max-steps-per-epoch", "2",
         "--device", "cpu"]


@pytest.fixture(scope="module")
def kermany_32(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> PreparedCache:
    return prepare_cache(open_sample(data_root, ["kermany"]), tmp_path_factory.mktemp("kermany-32") / "cache", size=32,
                         workers=2)


def test_tensorboard_events_hold_the_learning_curves_and_the_config(kermany_32: PreparedCache, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    result = runner.invoke(app, ["train-supervised", "--cache", str(kermany_32.directory), "--run", str(run), *TRAIN,
                                 "--logger", "tensorboard"])
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(run / "logs"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = events.Scalars("train_loss")
    assert [event.step for event in losses] == [1, 2]
    assert [event.value for event in losses] == pytest.approx([row["train_loss"] for row in history])
    assert "val_mean_auroc" in events.Tags()["scalars"]
    assert any(tag.startswith("config.yaml") for tag in events.Tags()["tensors"])  # the config, as text


def test_mlflow_store_holds_params_curves_and_artifacts(kermany_32: PreparedCache, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, tiny_classifier: Path) -> None:
    from mlflow.tracking import MlflowClient

    from cxrlens import tracking

    monkeypatch.setattr(tracking, "_USER_TRACKING_URI", None)  # no store of the user's: the local one beside the run
    run = tmp_path / "runs" / "kermany"
    result = runner.invoke(app, ["train-supervised", "--cache", str(kermany_32.directory), "--run", str(run), *TRAIN,
                                 "--logger", "mlflow"])
    assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")  # the local store beside the run
    [found] = client.search_runs([client.get_experiment_by_name("cxrlens").experiment_id])
    assert found.info.run_name == "kermany" and found.info.status == "FINISHED"
    assert found.data.params["model/backbone"] == "resnet18" and found.data.params["train/epochs"] == "2"
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    curve = client.get_metric_history(found.info.run_id, "train_loss")
    assert [metric.value for metric in sorted(curve, key=lambda m: m.step)] == pytest.approx(
        [row["train_loss"] for row in history])
    assert {artifact.path for artifact in client.list_artifacts(found.info.run_id)} == {"config.yaml", "metrics.csv"}

    # an evaluation: its headline numbers with their CIs, its metrics, report and model card as artifacts
    from cxrlens.checkpoints import ClassifierCheckpoint, load_checkpoint

    cache = load_checkpoint(tiny_classifier, ClassifierCheckpoint).provenance[0].cache
    result = runner.invoke(app, ["evaluate", str(tiny_classifier), "--cache", cache, "--run",
                                 str(tmp_path / "runs" / "evaluation"), "--bootstrap", "50", "--gallery", "0",
                                 "--logger", "mlflow"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "runs" / "evaluation" / "metrics.json").read_text())
    [evaluated] = client.search_runs([client.get_experiment_by_name("cxrlens").experiment_id],
                                     filter_string="attributes.run_name = 'evaluation'")
    assert evaluated.data.metrics["mean_auc"] == pytest.approx(metrics["classification_mean"]["auc"])
    floor = metrics["floor"]["mean"]["difference"]
    assert evaluated.data.metrics["model_raw-pixel_floor_mean_AUROC/low"] == pytest.approx(floor["low"])
    assert {artifact.path for artifact in client.list_artifacts(evaluated.info.run_id)} == {
        "metrics.json", "report.html", "model_card.md"}


def test_a_logger_that_is_not_installed_fails_in_one_line(kermany_32: PreparedCache, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from cxrlens import tracking

    monkeypatch.setattr(tracking, "_installed", lambda module: False)
    result = runner.invoke(app, ["train-supervised", "--cache", str(kermany_32.directory), "--run", str(tmp_path / "r"),
                                 *TRAIN, "--logger", "mlflow"])
    assert result.exit_code == 2 and "pip install 'cxrlens[track]'" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    assert tracking.resolve_logger("auto") == "none"  # auto without TensorBoard: no tracker, no error
