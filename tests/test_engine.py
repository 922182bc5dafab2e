"""The training engine on real images: exact resume, NaN stop, run protection, DDP equivalence."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrlens.checkpoints import ClassifierCheckpoint, TrainingState, load_checkpoint
from cxrlens.config import TrainConfig
from cxrlens.data.cache import PreparedCache, prepare_cache
from cxrlens.data.records import CXRDataset
from cxrlens.data.registry import open_sample
from cxrlens.data.splits import split_by_patient
from cxrlens.data.torch_datasets import CachedImageDataset
from cxrlens.models import build_model
from cxrlens.train.objectives import LossFunction
from cxrlens.train.run_folder import RunExistsError
from cxrlens.train.trainer import NonFiniteLossError, StepEvent, Trainer
from ddp_run import MODEL, supervised_objective


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> PreparedCache:
    dataset = open_sample(data_root, ["nih-sample"])
    subset = CXRDataset(dataset.classes, dataset.items[:160], dataset.problems, name="nih")
    return prepare_cache(subset, tmp_path_factory.mktemp("cache") / "c", size=32, workers=2)


def _sets(cache: PreparedCache) -> tuple[CachedImageDataset, CachedImageDataset]:
    splits = split_by_patient(cache.items(), mode="patient", seed=0)
    return CachedImageDataset(cache, splits.train), CachedImageDataset(cache, splits.val)


def _config(**overrides: object) -> TrainConfig:
    base = {"epochs": 3, "batch_size": 16, "accumulate": 2, "num_workers": 0, "accelerator": "cpu",
            "max_steps_per_epoch": 3, "augment": "none"}
    return TrainConfig(**{**base, **overrides})


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(MODEL)


def fit(model: torch.nn.Module, train: CachedImageDataset, val: CachedImageDataset, config: TrainConfig, run: Path,
        resume: bool = False, loss_fn: LossFunction | None = None,
        callbacks: tuple[Callable[[StepEvent], None], ...] = ()) -> dict:
    """The trainer on classification with ``config`` (its loss, or ``loss_fn``)."""
    trainer = Trainer(config, run, callbacks=callbacks, show_progress=False)
    return trainer.fit(model, supervised_objective(train.cache, config, loss_fn), train, val, resume=resume)


def test_resume_after_interrupt_matches_uninterrupted(tmp_path: Path, small_cache: PreparedCache) -> None:
    train, val = _sets(small_cache)
    straight = _model()
    fit(straight, train, val, _config(), tmp_path / "straight")

    def interrupt(event) -> None:  # noqa: ANN001 - a kill in the middle of epoch 2
        if event.epoch == 1 and event.step_in_epoch == 2:
            raise KeyboardInterrupt

    interrupted = _model()
    with pytest.raises(KeyboardInterrupt):
        fit(interrupted, train, val, _config(), tmp_path / "resumed", callbacks=(interrupt,))
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt").epoch == 1  # epochs finished: 1 of 3
    resumed = _model()
    result = fit(resumed, train, val, _config(), tmp_path / "resumed", resume=True)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [row["epoch"] for row in result["history"]] == [1, 2, 3]
    assert (tmp_path / "resumed" / "metrics.csv").read_text().count("\n") == 4
    final = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt", TrainingState)
    assert final.global_step == 9 and final.optimizer and final.scheduler is not None
    best = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "best.ckpt", ClassifierCheckpoint)
    assert best.epoch == result["best_epoch"]


def test_existing_run_is_not_overwritten(tmp_path: Path, small_cache: PreparedCache) -> None:
    train, val = _sets(small_cache)
    fit(_model(), train, val, _config(epochs=1), tmp_path / "run")
    before = (tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(RunExistsError, match="--resume .* --overwrite"):
        fit(_model(), train, val, _config(epochs=1), tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes() == before


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, small_cache: PreparedCache) -> None:
    train, val = _sets(small_cache)
    calls = {"n": 0}

    def poisoned(logits, targets, mask):  # noqa: ANN001, ANN202 - a loss that blows up in epoch 2
        calls["n"] += 1
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        return loss * float("nan") if calls["n"] > 8 else loss

    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 2.*last good checkpoint is kept"):
        fit(_model(), train, val, _config(), tmp_path / "run", loss_fn=poisoned)
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", TrainingState)
    assert checkpoint.epoch == 1  # the state after the last good epoch, the first
    assert all(torch.isfinite(v).all() for v in checkpoint.state.values() if v.is_floating_point())


def test_two_process_ddp_matches_one_process_double_batch(tmp_path: Path, small_cache: PreparedCache) -> None:
    script = Path(__file__).with_name("ddp_run.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    subprocess.run([sys.executable, str(script), str(small_cache.directory), str(tmp_path / "single"), "16", "1", "4"],
                   check=True, env=env, capture_output=True, timeout=300)
    subprocess.run([torchrun, "--nproc_per_node=2", "--master_port=29533", str(script), str(small_cache.directory),
                    str(tmp_path / "ddp"), "8", "2", "4"], check=True, env=env, capture_output=True, timeout=300)
    single = json.loads((tmp_path / "single.rank0").read_text())
    ranks = [json.loads((tmp_path / f"ddp.rank{r}").read_text()) for r in (0, 1)]
    ddp_curve = np.mean([rank["losses"] for rank in ranks], axis=0)
    assert len(single["losses"]) == len(ddp_curve) == 4
    np.testing.assert_allclose(ddp_curve, single["losses"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ranks[0]["weights"], single["weights"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ranks[0]["weights"], ranks[1]["weights"], rtol=0, atol=0)


def test_early_stopping_on_val_auroc(tmp_path: Path, small_cache: PreparedCache) -> None:
    train, val = _sets(small_cache)
    config = _config(epochs=6, lr=1e-12, scheduler="none", early_stopping=2, freeze_batchnorm=True)  # nothing changes
    result = fit(_model(), train, val, config, tmp_path / "run")
    assert result["best_epoch"] == 1 and len(result["history"]) == 3


@pytest.mark.parametrize(("plateau_on", "reduced"), [("train-loss", False), ("val-metric", True)])
def test_plateau_follows_the_training_loss_as_paper_000(tmp_path: Path, small_cache: PreparedCache, plateau_on: str,
                                                        reduced: bool) -> None:
    """A loss that falls every step while the model cannot change (zero gradient): paper 000's schedule, on the
    training loss, keeps the LR; on the (frozen) validation AUROC it cuts it by 10 after patience 0."""
    train, val = _sets(small_cache)
    calls = iter(range(1, 1000))

    def falling(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (logits * 0).sum() + 1.0 / next(calls)

    config = _config(epochs=3, lr=1e-3, scheduler="plateau", plateau_on=plateau_on, plateau_patience=0,
                     freeze_batchnorm=True)
    history = fit(_model(), train, val, config, tmp_path / "run", loss_fn=falling)["history"]
    assert [row["lr"] for row in history][-1] == (pytest.approx(1e-5) if reduced else 1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the lent GPU machine)")
def test_cuda_bf16_amp_training(tmp_path: Path, small_cache: PreparedCache) -> None:
    train, val = _sets(small_cache)
    config = _config(epochs=1, accelerator="cuda", precision="bf16-mixed")
    result = fit(_model(), train, val, config, tmp_path / "run")
    assert np.isfinite(result["history"][0]["train_loss"])


def test_cpu_bf16_and_channels_last_training(tmp_path: Path, small_cache: PreparedCache) -> None:
    """The quickstart's CPU speed settings: bf16 autocast where oneDNN has bfloat16 kernels, NHWC weights; the saved
    model is an ordinary one."""
    from cxrlens.train.trainer import training_precision

    supported = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert training_precision("bf16-mixed", "cpu") == ("bf16-mixed" if supported else "32-true")
    assert training_precision("16-mixed", "cpu") == "32-true" and training_precision("16-mixed", "cuda") == "16-mixed"
    train, val = _sets(small_cache)
    config = _config(epochs=1, precision="bf16-mixed", channels_last=True)
    result = fit(_model(), train, val, config, tmp_path / "run")
    assert np.isfinite(result["history"][0]["train_loss"])
    restored = _model()
    restored.load_state_dict(load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", TrainingState).state)
    assert all(p.is_contiguous() for p in restored.parameters())
