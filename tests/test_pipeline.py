"""Experiments: every paper config validates at the papers' settings and runs end to end in smoke mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxrlens.cli import app
from cxrlens.pipeline import (EvaluateStep, LinearEvalStep, PretrainStep, TrainStep, load_experiment, run_experiment,
                              smoke_version)

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
runner = CliRunner()


def _steps(name: str) -> dict:
    return {step.name: step for step in load_experiment(Path(__file__).parents[1] / "configs" / name).steps}


def test_there_is_a_config_per_paper_experiment() -> None:
    names = {path.stem for path in CONFIGS}
    assert {"quickstart", "paper000-baseline", "paper000-ssl-ft", "paper000-ssl-camloss-ft", "paper000-cam-methods",
            "paper000-resnet-depth", "paper001-simclr-resnet50", "paper001-simclr-resnet101",
            "paper002-simclr-linear", "paper003-resnet50", "paper003-efficientnet-b4", "paper004-lse-lba"} <= names


def test_configs_carry_the_papers_settings() -> None:
    camloss = _steps("paper000-ssl-camloss-ft.yaml")["byol-cam"].config
    method = camloss.method
    assert (method.name, method.cam_lambda, method.tau, method.dim, method.hidden) == ("byol-cam", 2.0, 0.99, 256, 512)
    assert (camloss.train.epochs, camloss.train.batch_size, camloss.train.lr, camloss.train.betas) == (
        500, 128, 1e-4, (0.9, 0.999))
    simclr = _steps("paper001-simclr-resnet50.yaml")
    assert (simclr["simclr"].config.method.temperature, simclr["simclr"].config.train.batch_size,
            simclr["simclr"].config.train.epochs) == (0.1, 64, 400)
    head = simclr["binary-head"]
    assert (head.model.head, head.train.epochs, head.train.batch_size, head.train.lr) == ("mlp", 30, 16, 1e-4)
    wide = _steps("paper002-simclr-linear.yaml")
    assert {step.config.fraction for step in wide.values() if isinstance(step, PretrainStep)} == {0.01, 0.1, 1.0}
    pretext = wide["simclr-1pct"].config
    assert (pretext.encoder.backbone, pretext.method.temperature, pretext.train.lr, pretext.method.projection) == (
        "wide_resnet50_2", 0.5, 5e-4, "bn")
    assert wide["linear-cell-1pct"].config.c_grid == (0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
    multires = _steps("paper003-resnet50.yaml")
    model, train = multires["multires"].model, multires["multires"].train
    assert (model.arch, model.pooling, model.lse_gamma, model.trainable_from) == ("multires", "lse", 10.0, 3)
    assert (train.lr, train.betas, train.batch_size, train.accumulate, train.epochs, train.loss) == (
        3e-4, (0.9, 0.9), 32, 3, 35, "dynamic-bce")
    seam = multires["multires-pcm"].config
    assert (seam.rotation, seam.ohem_keep, seam.lambda_msml, seam.lambda_ecr, seam.train.lr, seam.train.epochs) == (
        30.0, 0.2, 1.5, 1.0, 1e-6, 3)
    lba = _steps("paper004-lse-lba.yaml")
    assert sorted(step.model.lba_r0 for step in lba.values() if isinstance(step, TrainStep)) == [0.0, 5.0, 10.0]
    assert load_experiment(Path(__file__).parents[1] / "configs" / "paper004-lse-lba.yaml").data["nih"].size == 512


def test_bad_experiments_are_refused_before_anything_runs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npaper: '0'\ndescription: d\ndata: {a: {dataset: sample, roots: [kermany]}}\n"
                   "steps:\n  - {kind: evaluate, name: e, data: a, checkpoint: nothing}\n")
    with pytest.raises(ValueError, match="earlier train\\|refine step"):
        load_experiment(bad)
    bad.write_text("name: x\npaper: '0'\ndescription: d\ndata: {}\nsteps:\n  - {kind: train, name: t, data: b}\n")
    with pytest.raises(ValueError, match="unknown data 'b'"):
        load_experiment(bad)
    result = runner.invoke(app, ["run", str(bad)])
    assert result.exit_code == 2 and "unknown data" in result.output


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pipeline-cache")


@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_every_config_runs_in_smoke_mode(config: Path, tmp_path: Path, shared_cache: Path, data_root: Path) -> None:
    experiment = smoke_version(load_experiment(config))
    assert all(spec.dataset == "sample" and spec.size == 64 for spec in experiment.data.values())
    summary = run_experiment(experiment, tmp_path / "runs", shared_cache, data_root, "cpu", log=lambda _: None)
    folder = tmp_path / "runs" / experiment.name
    assert json.loads((folder / "summary.json").read_text())["steps"].keys() == {s.name for s in experiment.steps}
    for step in experiment.steps:
        record = summary["steps"][step.name]
        assert Path(record["output"]).exists(), step.name
        if isinstance(step, EvaluateStep):
            assert Path(record["report"]).is_file()
            assert 0 <= record["classification_mean"]["auc"] <= 1 or record["classification_mean"]["auc"] != record["classification_mean"]["auc"]
        if isinstance(step, LinearEvalStep):
            assert record["mean_auc"]
    for reference in summary["references"]:  # a finding may be absent from a smoke run's few boxed images
        assert "ours" in reference and reference["value"], reference["table"]


def test_rerun_skips_finished_steps_and_cli_prints_the_summary(tmp_path: Path, shared_cache: Path,
                                                               data_root: Path) -> None:
    arguments = ["run", "quickstart", "--smoke", "--runs", str(tmp_path), "--cache", str(shared_cache),
                 "--device", "cpu", "--data-root", str(data_root)]
    first = runner.invoke(app, arguments)
    assert first.exit_code == 0, first.output
    assert "mean AUROC" in first.output and "location prior" in first.output and "report.html" in first.output
    marker = tmp_path / "quickstart-smoke" / "pretrain-byol-cam" / "step.json"
    stamp = marker.stat().st_mtime
    second = runner.invoke(app, arguments)
    assert second.exit_code == 0 and second.output.count("done earlier, skipped") == 3
    assert marker.stat().st_mtime == stamp
