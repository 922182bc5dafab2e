"""The one checkpoint reader/writer: typed round trips, clear refusals (older, newer, foreign, wrong
kind, code-carrying pickles), and the data provenance a trained classifier records."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cxrlens.checkpoints import (VERSION, CheckpointError, ClassifierCheckpoint, DataProvenance, EncoderCheckpoint,
                                 PCMSpec, RefinedCheckpoint, TrainingState, load_checkpoint, save_checkpoint)
from cxrlens.cli import app
from cxrlens.config import InputSpec, ModelConfig, Normalisation
from cxrlens.data.cache import PreparedCache
from cxrlens.data.provenance import hashed, image_key

runner = CliRunner()


def _classifier(**fields: object) -> ClassifierCheckpoint:
    return ClassifierCheckpoint(state={"w": torch.arange(3.0)}, network=ModelConfig(backbone="resnet18"),
                                classes=["A", "B"], input=InputSpec(size=64, fit="pad"),
                                normalisation=Normalisation(mean=0.4, std=0.2), epoch=2,
                                metrics={"val_mean_auroc": math.nan}, **fields)


@pytest.mark.parametrize("checkpoint", [
    _classifier(provenance=[DataProvenance(cache="c", dataset="d", fingerprint="f", images={"train": hashed(["x"])})]),
    RefinedCheckpoint(**dict(_classifier()), pcm=PCMSpec(in_channels=4, embed_channels=2, nms=False),
                      pcm_state={"theta.weight": torch.ones(2, 4, 1, 1)}),
    EncoderCheckpoint(state={"w": torch.ones(1)}, method="byol", encoder=ModelConfig(backbone="resnet18"),
                      normalisation=Normalisation(), cam_findings=["Mass"]),
    TrainingState(state={"w": torch.ones(1)}, optimizer={"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
                  scheduler=None, epoch=1, global_step=4, best=-math.inf, best_epoch=-1,
                  history=[{"epoch": 1, "val_loss": math.nan}]),
], ids=lambda checkpoint: checkpoint.kind)
def test_every_schema_round_trips(checkpoint: object, tmp_path: Path) -> None:
    path = save_checkpoint(checkpoint, tmp_path / "a.ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]  # the temporary file was renamed into place
    loaded = load_checkpoint(path, type(checkpoint))
    assert type(loaded) is type(checkpoint)
    for name, value in dict(checkpoint).items():
        if isinstance(value, dict) and any(isinstance(v, torch.Tensor) for v in value.values()):
            assert all(torch.equal(value[key], loaded.__dict__[name][key]) for key in value), name
        else:
            assert repr(getattr(loaded, name)) == repr(value), name


def test_refusals_name_the_file_and_what_to_do(tmp_path: Path) -> None:
    encoder = save_checkpoint(EncoderCheckpoint(state={}, method="simclr", encoder=ModelConfig(),
                                                normalisation=Normalisation()), tmp_path / "encoder.ckpt")
    with pytest.raises(CheckpointError, match=f"{encoder}: is a pretrained encoder .*; this needs a classifier"):
        load_checkpoint(encoder, ClassifierCheckpoint)
    old = tmp_path / "old.ckpt"
    torch.save({"model": {}, "model_config": {}, "classes": ["A"]}, old)  # what cxrlens 0.1 wrote
    with pytest.raises(CheckpointError, match="older cxrlens .*no input size.*train or fine-tune again"):
        load_checkpoint(old)
    torch.save({"kind": "pretrain", "encoder": {}, "encoder_config": {}}, old)
    with pytest.raises(CheckpointError, match="older cxrlens .*run pretrain again"):
        load_checkpoint(old)
    torch.save({"format": "cxrlens-checkpoint", "version": 2, "kind": "encoder", "meta": "{}", "state": {}}, old)
    with pytest.raises(CheckpointError, match="format 2.*boxes of a CAM loss.*run pretrain again"):
        load_checkpoint(old)  # its provenance cannot be trusted by the leak guard
    newer = tmp_path / "newer.ckpt"
    torch.save({"format": "cxrlens-checkpoint", "version": 99, "kind": "classifier", "meta": "{}", "state": {}}, newer)
    with pytest.raises(CheckpointError, match="format 99 .* is not one this cxrlens reads"):
        load_checkpoint(newer)
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.ones(1)}, foreign)
    with pytest.raises(CheckpointError, match="not a cxrlens checkpoint"):
        load_checkpoint(foreign)
    damaged = tmp_path / "damaged.ckpt"
    torch.save({"format": "cxrlens-checkpoint", "version": VERSION, "kind": "classifier",
                "meta": "{\"classes\": 3}", "state": {}}, damaged)
    with pytest.raises(CheckpointError, match="damaged classifier checkpoint"):
        load_checkpoint(damaged)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="not a readable cxrlens checkpoint"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")


class _Exploit:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch exploited",))


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    torch.save({"format": "cxrlens-checkpoint", "payload": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused: it holds Python objects .* could run code"):
        load_checkpoint(path)
    assert not (tmp_path / "exploited").exists()


def test_the_cli_refuses_a_wrong_kind_in_one_line(tmp_path: Path) -> None:
    encoder = save_checkpoint(EncoderCheckpoint(state={}, method="byol", encoder=ModelConfig(),
                                                normalisation=Normalisation()), tmp_path / "encoder.ckpt")
    result = runner.invoke(app, ["predict", str(encoder), str(encoder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        f"error: {encoder}: is a pretrained encoder (encoder.ckpt or epoch-NNNN.ckpt of pretrain); this needs a "
        "classifier (best.ckpt of train-supervised or finetune)"]


def test_a_trained_classifier_records_its_data(tiny_classifier: Path) -> None:
    checkpoint = load_checkpoint(tiny_classifier, ClassifierCheckpoint)
    assert checkpoint.input == InputSpec(size=64, fit="squash") and checkpoint.normalisation == Normalisation()
    assert checkpoint.classes[0] == "Atelectasis" and "val_mean_auroc" in checkpoint.metrics
    (provenance,) = checkpoint.provenance
    cache = PreparedCache(provenance.cache)
    assert provenance.fingerprint == cache.index["fingerprint"]
    assert provenance.split["splits"] == "official-disjoint"
    train, val = (set(provenance.images[role]) for role in ("train", "val"))
    assert train and val and not train & val
    assert not set(provenance.patients["train"]) & set(provenance.patients["val"])  # patient-level
    names = hashed(image_key(cache.item(index)) for index in range(len(cache)))
    assert train | val <= set(names) and len(train) + len(val) < len(names)  # the test split is left out
    assert np.isfinite(checkpoint.metrics["val_mean_auroc"]) or math.isnan(checkpoint.metrics["val_mean_auroc"])
