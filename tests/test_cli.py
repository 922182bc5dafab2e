"""The command line: help everywhere, inspect and prepare on the real sample sets, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxrlens.cli import app
from cxrlens.extras import EXTRAS

runner = CliRunner()


def _commands(typer_app, prefix=()):  # noqa: ANN001, ANN202
    import typer.main

    group = typer.main.get_command(typer_app)
    stack = [(prefix, group)]
    while stack:
        path, command = stack.pop()
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            stack.append(((*path, name), sub))


def test_help_on_every_subcommand() -> None:
    paths = list(_commands(app))
    assert ("data", "prepare") in paths and ("data", "inspect") in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def test_console_script_installed() -> None:
    script = Path(sys.executable).parent / "cxrlens"
    result = subprocess.run([str(script), "version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip()


def test_inspect_and_prepare_sample(tmp_path: Path, data_root: Path) -> None:
    result = runner.invoke(app, ["data", "inspect", "sample", "cohen", "--data-root", str(data_root)])
    assert result.exit_code == 0, result.output
    assert "COVID-19" in result.output and "splits (official-disjoint)" in result.output and "official lists" in result.output
    assert "rows whose image file is missing" in result.output
    out = tmp_path / "cache"
    args = ["data", "prepare", "sample", "cohen", "--data-root", str(data_root), "--out", str(out), "--size", "32", "--workers", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "images ready" in result.output and (out / "index.json").exists()
    again = runner.invoke(app, args)  # resumes: nothing left to do, nothing clobbered
    assert again.exit_code == 0 and "images ready" in again.output
    clash = runner.invoke(app, [*args[:-4], "--size", "64"])
    assert clash.exit_code == 2 and "--overwrite" in clash.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "inspect", "nih", "/nonexistent/nih"], "/nonexistent/nih"),
        (["data", "inspect", "kermany"], "needs at least one folder"),
        (["data", "inspect", "imagenet", "/tmp"], "unknown dataset"),
        (["data", "inspect", "sample", "--data-root", "/nonexistent/root"], "not a folder"),
    ],
)
def test_bad_input_one_line_error(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_models_list_prints_parameter_counts() -> None:
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert "26,261,006" in result.output and "26,273,615" in result.output  # ours beside paper 003's


def test_train_supervised_on_real_cache(tmp_path: Path, data_root: Path) -> None:
    cache = tmp_path / "cache"
    prepared = runner.invoke(app, ["data", "prepare", "sample", "kermany", "--data-root", str(data_root),
                                   "--out", str(cache), "--size", "32", "--workers", "2"])
    assert prepared.exit_code == 0, prepared.output
    args = ["train-supervised", "--cache", str(cache), "--run", str(tmp_path / "run"), "--backbone", "resnet18",
            "--epochs", "1", "--batch-size", "8", "--max-steps-per-epoch", "2", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best val mean AUROC" in result.output
    for name in ("config.yaml", "metrics.csv", "metrics.jsonl", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (tmp_path / "run" / name).exists(), name
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.output and "Traceback" not in again.output
    bad = runner.invoke(app, [*args, "--overwrite", "--pooling", "max"])
    assert bad.exit_code == 2 and "invalid settings: pooling" in bad.output


def test_pretrain_flags_without_method_take_the_default_method(tmp_path: Path) -> None:
    result = runner.invoke(app, ["pretrain", "--cache", str(tmp_path / "missing"), "--run", str(tmp_path / "run"),
                                 "--boxed-per-batch", "2", "--cam-lambda", "1.5"])
    assert result.exit_code == 2 and "invalid settings" not in result.output
    assert "not a prepared cache" in result.output


def test_device_auto_leaves_a_configs_choice_standing() -> None:
    from cxrlens.cli._common import accelerator
    from cxrlens.config import TrainConfig
    from cxrlens.experiment import StepContext

    assert accelerator("auto") is None and accelerator("cpu") == "cpu"
    config = TrainConfig(accelerator="cpu")
    context = StepContext(Path("."), {}, {}, False, "auto")
    assert context.train(config).accelerator == "cpu"
    assert context.train(TrainConfig()).accelerator == "auto"
    assert StepContext(Path("."), {}, {}, False, "cuda").train(config).accelerator == "cuda"


@pytest.mark.parametrize(("command", "module", "extra"), [
    (["serve", "{ckpt}"], "uvicorn", "serve"), (["serve", "{ckpt}"], "fastapi", "serve"),
    (["export", "{ckpt}", "--onnx", "--out", "{out}/model.onnx"], "onnx", "onnx"),
    (["predict", "{ckpt}", "{ckpt}", "--out", "{out}", "--dicom-out"], "highdicom", "dicom-out")])
def test_a_command_whose_extra_is_missing_names_the_install(command: list[str], module: str, extra: str,
                                                           tiny_classifier: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The light core (pip install cxrlens) lacks the extras' packages: one line naming the pip install, exit 2
    (.ci/core-install checks the same on a real core-only install)."""
    monkeypatch.setitem(sys.modules, module, None)  # import of it raises ModuleNotFoundError, as when not installed
    arguments = [part.format(ckpt=tiny_classifier, out=tmp_path / "out") for part in command]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (f"error: {EXTRAS[module][1]}: the optional package {module!r} is not installed; "
                                     f"pip install 'cxrlens[{extra}]'")
