"""Downstream use of a pretrained encoder: fine-tuning, linear evaluation, metrics, t-SNE, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cxrlens.checkpoints import (CheckpointError, ClassifierCheckpoint, EncoderCheckpoint, load_checkpoint,
                                 save_checkpoint)
from cxrlens.cli import app
from cxrlens.config import LinearEvalConfig, ModelConfig, Normalisation, PretrainConfig, TrainConfig
from cxrlens.data.cache import PreparedCache, prepare_cache
from cxrlens.data.registry import open_sample
from cxrlens.evaluate.classification import binary_metrics, binary_report, mean_auroc, paired_mean_auroc_difference
from cxrlens.evaluate.linear_probe import run_linear_eval
from cxrlens.models import build_model
from cxrlens.models.classifier import MLPHead
from cxrlens.ssl.pretrain import pretrain
from cxrlens.train.supervised import finetune

runner = CliRunner()


@pytest.fixture(scope="module")
def kermany_cache(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> PreparedCache:
    """The real Kermany pneumonia images at 64 px."""
    return prepare_cache(open_sample(data_root, ["kermany"]), tmp_path_factory.mktemp("kermany") / "c", size=64,
                         workers=2)


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory: pytest.TempPathFactory, kermany_cache: PreparedCache) -> Path:
    config = PretrainConfig(method="byol", encoder=ModelConfig(backbone="resnet18"),
                            train={"epochs": 1, "batch_size": 16, "num_workers": 0, "accelerator": "cpu",
                                   "max_steps_per_epoch": 2})
    summary = pretrain([kermany_cache.directory], tmp_path_factory.mktemp("pretrain") / "run", config,
                       show_progress=False)
    return Path(summary["encoder"])


def test_binary_metrics_by_hand() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.4, 0.7])
    metrics = binary_metrics(labels, scores)  # tp 3, fn 1, tn 3, fp 1
    assert (metrics["acc"], metrics["sen"], metrics["spe"], metrics["f1"]) == (0.75, 0.75, 0.75, 0.75)
    assert metrics["auc"] == pytest.approx(14 / 16)  # 14 of the 16 positive/negative pairs are ordered
    report = binary_report(labels, scores, resamples=200)
    for entry in report.values():
        assert entry["low"] <= entry["value"] <= entry["high"]


def test_finetune_model_starts_from_the_encoder_with_freeze_policies(encoder_path: Path) -> None:
    state = load_checkpoint(encoder_path, EncoderCheckpoint).state
    config = ModelConfig(backbone="resnet18", num_classes=1, init=str(encoder_path), head="mlp", trainable_from=5)
    model = build_model(config)
    for name, value in model.extractor.state_dict().items():
        torch.testing.assert_close(value, state[name])
    assert isinstance(model.head, MLPHead) and model.fc.out_features == 1  # paper 001: two FC, dropout
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head"}
    partly = build_model(config.model_copy(update={"trainable_from": 3}))
    frozen = [name for name, p in partly.extractor.named_parameters() if not p.requires_grad]
    assert any("layer2" in name for name in frozen) and not any("layer3" in name for name in frozen)
    with pytest.raises(CheckpointError, match="resnet50"):
        build_model(config.model_copy(update={"backbone": "resnet50"}))


def test_finetune_binary_head_on_real_kermany(tmp_path: Path, kermany_cache: PreparedCache, encoder_path: Path) -> None:
    train = TrainConfig(epochs=1, batch_size=16, accumulate=1, num_workers=0, accelerator="cpu", loss="bce",
                        max_steps_per_epoch=3, scheduler="none")
    summary = finetune(kermany_cache.directory, tmp_path / "ft", encoder_path, ModelConfig(head="mlp"), train,
                       freeze="last-blocks", show_progress=False)
    assert 0 <= summary["best_val_mean_auroc"] <= 1
    with pytest.raises(ValueError, match="freeze"):
        finetune(kermany_cache.directory, tmp_path / "x", encoder_path, ModelConfig(), train, freeze="some")


def test_finetune_normalises_as_the_encoder_was_pretrained(tmp_path: Path, kermany_cache: PreparedCache,
                                                           encoder_path: Path) -> None:
    encoder = load_checkpoint(encoder_path, EncoderCheckpoint)
    shifted = save_checkpoint(encoder.model_copy(update={"normalisation": Normalisation(mean=0.45, std=0.3)}),
                              tmp_path / "encoder.ckpt")
    train = TrainConfig(epochs=1, batch_size=16, accumulate=1, num_workers=0, accelerator="cpu", loss="bce",
                        max_steps_per_epoch=1, scheduler="none")
    for run, settings, expected in (("inherits", train, Normalisation(mean=0.45, std=0.3)),
                                    ("explicit", train.model_copy(update={"mean": 0.5}), Normalisation(mean=0.5, std=0.25))):
        finetune(kermany_cache.directory, tmp_path / run, shifted, ModelConfig(head="mlp"), settings, freeze="all",
                 show_progress=False)
        best = load_checkpoint(tmp_path / run / "checkpoints" / "best.ckpt", ClassifierCheckpoint)
        assert best.normalisation == expected, run


def test_linear_eval_on_real_kermany_is_sane(tmp_path: Path, kermany_cache: PreparedCache, encoder_path: Path) -> None:
    config = LinearEvalConfig(bootstrap=30, folds=3, fractions=(0.1, 1.0))
    payload = run_linear_eval(kermany_cache.directory, tmp_path / "le", encoder_path, config)
    assert set(payload["results"]) == {"0.1", "1"}
    for per_class in payload["results"].values():
        entry = per_class["Pneumonia"]
        assert entry["C"] in config.c_grid
        for metric in ("auc", "acc", "sen", "spe", "f1"):
            assert 0 <= entry[metric]["low"] <= entry[metric]["value"] <= entry[metric]["high"] <= 1
    assert payload["mean_auc"]["1"] > 0.6  # pneumonia vs normal is separable even from weak features
    assert payload["train_images"] + payload["test_images"] == len(kermany_cache.ready_indices())
    assert (tmp_path / "le" / "metrics.csv").read_text().count("\n") == 3
    scores = np.load(tmp_path / "le" / "test_scores.npz")
    assert len(scores["test_indices"]) == payload["test_images"]
    known = kermany_cache.masks[scores["test_indices"]].astype(bool)
    column = kermany_cache.classes.index("Pneumonia")
    assert np.isfinite(scores["fraction_1"][known[:, column], column]).all()
    # the same probe on a random-init copy of the encoder's network, paired on the same test patients
    random_init = payload["random_init"]
    assert set(random_init) == {"0.1", "1"}
    mean = random_init["1"]["mean"]
    assert mean["model"] == pytest.approx(payload["mean_auc"]["1"], abs=1e-9)
    assert mean["random_init"] == pytest.approx(random_init["1"]["mean_auc"], abs=1e-9)
    assert mean["random_init"] != mean["model"]  # other features
    difference = mean["difference"]
    assert difference["value"] == pytest.approx(mean["model"] - mean["random_init"])
    assert difference["low"] <= difference["value"] <= difference["high"]
    assert [claim["claim"] for claim in payload["verdict"]][2:] == [
        "pretrained probe > random-init probe (mean AUROC, 0.1 of the labels)",
        "pretrained probe > random-init probe (mean AUROC, 1 of the labels)"]
    with pytest.raises(FileExistsError):
        run_linear_eval(kermany_cache.directory, tmp_path / "le", encoder_path, config)
    alone = run_linear_eval(kermany_cache.directory, tmp_path / "alone", encoder_path,
                            config.model_copy(update={"random_init_baseline": False, "floor": False}))
    assert alone["random_init"] == {"skipped": "not fitted (random_init_baseline: false)"}
    assert alone["mean_auc"] == payload["mean_auc"]  # the baseline changes nothing of the encoder's own results


def test_paired_mean_auroc_difference_by_construction() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (200, 2)).astype(float)
    masks = np.ones_like(labels, dtype=bool)
    noise = rng.random(labels.shape)
    same = paired_mean_auroc_difference(labels, masks, noise, noise, resamples=50)
    assert same == {"value": 0.0, "low": 0.0, "high": 0.0}
    informative = labels + 0.8 * noise
    better = paired_mean_auroc_difference(labels, masks, informative, noise, resamples=200)
    assert 0 < better["low"] <= better["value"] <= better["high"]
    assert better["value"] == pytest.approx(mean_auroc(informative, labels) - mean_auroc(noise, labels))


def test_cli_linear_eval_tsne_and_augment_grid(tmp_path: Path, kermany_cache: PreparedCache, encoder_path: Path) -> None:
    result = runner.invoke(app, ["linear-eval", "--cache", str(kermany_cache.directory), "--run", str(tmp_path / "le"),
                                 "--random-init", "resnet18", "--fractions", "1", "--bootstrap", "20", "--folds", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "le" / "metrics.json").read_text())["encoder"] == "random-init resnet18"
    result = runner.invoke(app, ["tsne", str(encoder_path), "--cache", str(kermany_cache.directory),
                                 "--out", str(tmp_path / "tsne.png"), "--max-images", "80"])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "tsne.png").size[0] > 300
    result = runner.invoke(app, ["augment", "--cache", str(kermany_cache.directory), "--show", str(tmp_path / "a.png"),
                                 "--images", "2", "--repeats", "3"])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "a.png").size == (64 * 7, 64 * 2)
    result = runner.invoke(app, ["linear-eval", "--cache", str(kermany_cache.directory), "--run", str(tmp_path / "x")])
    assert result.exit_code == 2 and "exactly one of --encoder and --random-init" in result.output


def test_cli_pretrain_then_finetune(tmp_path: Path, kermany_cache: PreparedCache) -> None:
    run = tmp_path / "pt"
    common = ["pretrain", "--cache", str(kermany_cache.directory), "--run", str(run), "--method", "simclr",
              "--backbone", "resnet18", "--batch-size", "16", "--max-steps-per-epoch", "2", "--num-workers", "0",
              "--device", "cpu", "--epochs", "1", "--views-on", "device"]
    result = runner.invoke(app, common)
    assert result.exit_code == 0, result.output
    assert "views_on: device" in (run / "config.yaml").read_text()  # the views were drawn on the device (kornia)
    result = runner.invoke(app, common)
    assert result.exit_code == 2 and "--resume" in result.output
    result = runner.invoke(app, ["finetune", "--encoder", str(run / "encoder.ckpt"), "--cache",
                                 str(kermany_cache.directory), "--run", str(tmp_path / "ft"), "--freeze", "all",
                                 "--epochs", "1", "--batch-size", "16", "--max-steps-per-epoch", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ft" / "checkpoints" / "best.ckpt").is_file()
