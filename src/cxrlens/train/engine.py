"""The one training loop, on Lightning Fabric: CPU, one GPU or DDP; AMP; accumulation; resume.

Devices, DDP process groups, AMP autocast and gradient sync are Fabric's; this module
adds what the papers need around them:

* gradient accumulation (paper 003: batch 32 x 3) without gradient all-reduce on the
  accumulating micro-steps (``fabric.no_backward_sync``);
* Adam / AdamW / SGD; ReduceLROnPlateau on validation mean AUROC (paper 000: x0.1 after
  4 epochs, down to 1e-6) or cosine;
* a checkpoint after every epoch, written atomically: ``checkpoints/last.ckpt`` (model,
  optimizer, scheduler, epoch, step, history) and ``checkpoints/best.ckpt`` (best
  validation mean AUROC); early stopping on the same metric;
* exact resume: the data order, the augmentation workers' seeds and the global RNG of
  every epoch derive from ``(seed, epoch, rank)``, so a run resumed from the last
  epoch's checkpoint retraces the uninterrupted one bit for bit;
* a NaN or infinite loss stops the run with :class:`NonFiniteLossError`, leaving the last
  good checkpoint untouched;
* the same global batches on any number of processes: a DistributedSampler is used even
  on one process, so N processes with batch B see what one process sees with batch N*B.
  The loaders are deliberately not wrapped by ``fabric.setup_dataloaders``: its wrapper
  calls ``sampler.set_epoch(number of iterations so far)``, which after a resume would
  replay epoch 0's order instead of the resumed epoch's.

What one step computes is an :class:`Objective`: :class:`SupervisedObjective` (logits,
labels, mask -> loss) by default; the self-supervised methods bring their own (two views,
EMA target update after each optimizer step). Without a validation set (pretraining) no
``best.ckpt`` is kept and the plateau scheduler is refused.

Per-epoch metrics go to ``metrics.jsonl`` and ``metrics.csv`` in the run folder.
"""

from __future__ import annotations

import csv
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from lightning.fabric import Fabric
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from cxrlens.config import TrainConfig
from cxrlens.data.torch_datasets import collate_skipping_failed, to_unit_float
from cxrlens.evaluate.classification import mean_auroc
from cxrlens.train.checkpoint import load_checkpoint, save_atomic
from cxrlens.train.losses import dynamic_weighted_bce, multilabel_soft_margin, positive_weighted_bce

LossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class RunExistsError(RuntimeError):
    """The run folder already holds checkpoints and neither resume nor overwrite was asked."""


@dataclass(frozen=True)
class StepEvent:
    """What a callback sees after each optimizer step."""

    epoch: int
    step_in_epoch: int
    global_step: int
    loss: float


class Objective(Protocol):
    """What one training step minimises; ``model`` is the Fabric-wrapped module."""

    def loss(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """``{"loss": total, ...other scalar terms to log}`` for one micro-batch on the device."""

    def after_step(self, module: nn.Module, global_step: int, total_steps: int) -> None:
        """Called after every optimizer step with the unwrapped module (e.g. BYOL's EMA)."""


class EpochBatchSampler(Protocol):
    """A batch sampler whose order is a function of the epoch (and its own seed and rank)."""

    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self) -> Iterator[list[int]]: ...

    def __len__(self) -> int: ...


class SupervisedObjective:
    """Classification: ``loss_fn(model(normalised images), labels, mask)``."""

    def __init__(self, loss_fn: LossFunction, config: TrainConfig) -> None:
        self.loss_fn = loss_fn
        self.config = config

    def loss(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        logits = model(normalise(batch["image"], self.config))
        return {"loss": self.loss_fn(logits.float(), batch["labels"], batch["mask"])}

    def after_step(self, module: nn.Module, global_step: int, total_steps: int) -> None:
        return None


def make_loss(config: TrainConfig, pos_weight: torch.Tensor | None = None) -> LossFunction:
    """The loss ``config.loss`` names, as ``loss(logits, targets, mask)``."""
    if config.loss == "dynamic-bce":
        return dynamic_weighted_bce
    if config.loss == "soft-margin":
        return multilabel_soft_margin
    weight = pos_weight if config.loss == "weighted-bce" else None
    return lambda logits, targets, mask: positive_weighted_bce(logits, targets, mask, weight)


def make_fabric(config: TrainConfig) -> Fabric:
    accelerator = config.accelerator
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA GPU is visible")
    precision = config.precision if accelerator == "cuda" else "32-true"
    return Fabric(accelerator=accelerator, devices=config.devices, strategy=config.strategy, precision=precision)


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    loss_fn: LossFunction | None = None,
    callbacks: Sequence[Callable[[StepEvent], None]] = (),
    fabric: Fabric | None = None,
    extra_state: dict | None = None,
    show_progress: bool = True,
    objective: Objective | None = None,
    batch_sampler: EpochBatchSampler | None = None,
) -> dict:
    """Train ``model`` and return ``{"history": [...], "best_val_mean_auroc", "best_epoch"}``.

    ``extra_state`` (e.g. the model config and class names) is stored in every checkpoint.
    ``objective`` replaces the supervised step (``loss_fn`` is then unused);
    ``batch_sampler`` replaces the shuffled DistributedSampler (it must split the batches
    between ranks itself).
    """
    run_dir = Path(run_dir)
    checkpoints = run_dir / "checkpoints"
    last_path = checkpoints / "last.ckpt"
    fabric = fabric or make_fabric(config)
    if not fabric._launched:  # noqa: SLF001 - torchrun-started processes are already launched
        fabric.launch()
    _claim_run(fabric, run_dir, last_path, resume, overwrite)
    loss_fn = loss_fn or make_loss(config)
    objective = objective or SupervisedObjective(loss_fn, config)
    if val_set is None and config.scheduler == "plateau":
        raise ValueError("the plateau scheduler follows validation AUROC; without a validation set use cosine or none")
    if config.sync_batchnorm and fabric.world_size > 1 and fabric.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = _optimizer(model, config)
    scheduler = _scheduler(optimizer, config)
    model, optimizer = fabric.setup(model, optimizer)
    train_loader, sampler, generator = _train_loader(fabric, train_set, config, batch_sampler)
    val_loader = _val_loader(fabric, val_set, config) if val_set is not None else None
    total_steps = config.epochs * _steps_per_epoch(len(train_loader), config)

    state = {"epoch": -1, "global_step": 0, "best": -math.inf, "best_epoch": -1, "history": []}
    if resume and last_path.exists():
        checkpoint = load_checkpoint(last_path)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        state.update({key: checkpoint[key] for key in state})
        fabric.print(f"resuming {run_dir} after epoch {state['epoch'] + 1} (step {state['global_step']})")

    for epoch in range(state["epoch"] + 1, config.epochs):
        started = time.perf_counter()
        _seed_epoch(config.seed, epoch, fabric.global_rank, sampler, generator)
        terms, skipped = _train_epoch(fabric, model, optimizer, train_loader, objective, config, epoch, state,
                                      callbacks, show_progress, total_steps)
        val = _validate(fabric, model, val_loader, loss_fn, config) if val_loader is not None else {}
        if scheduler is not None:
            _step_scheduler(scheduler, val.get("val_mean_auroc", math.nan))
        row = {"epoch": epoch + 1, "step": state["global_step"], **terms, **val,
               "lr": optimizer.param_groups[0]["lr"], "skipped_images": skipped,
               "seconds": round(time.perf_counter() - started, 3)}
        state["history"].append(row)
        improved = math.isfinite(val.get("val_mean_auroc", math.nan)) and val["val_mean_auroc"] > state["best"]
        if improved:
            state["best"], state["best_epoch"] = val["val_mean_auroc"], epoch + 1
        state["epoch"] = epoch
        if fabric.is_global_zero:
            payload = {"model": model.state_dict(), **(extra_state or {})}
            if improved:
                save_atomic({**payload, "epoch": epoch + 1, "val_mean_auroc": val["val_mean_auroc"]},
                            checkpoints / "best.ckpt")
            if config.keep_every and (epoch + 1) % config.keep_every == 0:
                save_atomic({**payload, "epoch": epoch + 1}, checkpoints / f"epoch-{epoch + 1:04d}.ckpt")
            save_atomic({**payload, **state, "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict() if scheduler is not None else None}, last_path)
            _write_metrics(run_dir, state["history"])
        fabric.barrier()
        fabric.print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if config.early_stopping and epoch + 1 - state["best_epoch"] >= config.early_stopping and state["best_epoch"] > 0:
            fabric.print(f"early stop: no better val mean AUROC for {config.early_stopping} epochs")
            break
    return {"history": state["history"], "best_val_mean_auroc": state["best"], "best_epoch": state["best_epoch"]}


def _claim_run(fabric: Fabric, run_dir: Path, last_path: Path, resume: bool, overwrite: bool) -> None:
    if last_path.exists() and not (resume or overwrite):
        raise RunExistsError(f"{run_dir}: holds a run already; pass --resume to continue it or --overwrite to replace it")
    if overwrite and not resume and fabric.is_global_zero:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # the user asked with --overwrite
        for name in ("metrics.jsonl", "metrics.csv"):
            (run_dir / name).unlink(missing_ok=True)
    fabric.barrier()


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(parameters, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):  # noqa: ANN202 - torch scheduler
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=config.plateau_factor,
                                                          patience=config.plateau_patience, min_lr=config.min_lr)
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.min_lr)
    return None


def _step_scheduler(scheduler, metric: float) -> None:  # noqa: ANN001
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if math.isfinite(metric):
            scheduler.step(metric)
    else:
        scheduler.step()


def _train_loader(fabric: Fabric, dataset: Dataset, config: TrainConfig, batch_sampler: EpochBatchSampler | None,
                  ) -> tuple[DataLoader, DistributedSampler | EpochBatchSampler, torch.Generator]:
    generator = torch.Generator()
    common = {"num_workers": config.num_workers, "collate_fn": collate_skipping_failed, "generator": generator,
              "pin_memory": fabric.device.type == "cuda"}
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **common), batch_sampler, generator
    sampler = DistributedSampler(dataset, num_replicas=fabric.world_size, rank=fabric.global_rank, shuffle=True,
                                 seed=config.seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True, **common)
    if len(loader) == 0:
        raise ValueError(f"{len(dataset)} training images give no full batch of {config.batch_size} per process; "
                         "lower the batch size")
    return loader, sampler, generator


def _steps_per_epoch(micro_batches: int, config: TrainConfig) -> int:
    if config.max_steps_per_epoch:
        micro_batches = min(micro_batches, config.max_steps_per_epoch * config.accumulate)
    return math.ceil(micro_batches / config.accumulate)


def _val_loader(fabric: Fabric, dataset: Dataset, config: TrainConfig) -> DataLoader:
    sampler = DistributedSampler(dataset, num_replicas=fabric.world_size, rank=fabric.global_rank, shuffle=False)
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers,
                        collate_fn=collate_skipping_failed, generator=torch.Generator().manual_seed(config.seed))
    return loader


def _seed_epoch(seed: int, epoch: int, rank: int, sampler: DistributedSampler | EpochBatchSampler,
                generator: torch.Generator) -> None:
    """Derive every random stream of this epoch from (seed, epoch, rank)."""
    sampler.set_epoch(epoch)
    epoch_seed = (seed * 1_000_003 + epoch) * 1_009 + rank
    generator.manual_seed(epoch_seed)
    torch.manual_seed(epoch_seed)
    random.seed(epoch_seed)
    np.random.seed(epoch_seed % 2**32)


def normalise(images: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """uint8 batch -> float, normalised with the configured dataset mean and std."""
    return (to_unit_float(images) - config.mean) / config.std


def _set_train_mode(model: nn.Module, config: TrainConfig) -> None:
    model.train()
    if config.freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _train_epoch(fabric: Fabric, model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                 objective: Objective, config: TrainConfig, epoch: int, state: dict,
                 callbacks: Sequence[Callable[[StepEvent], None]], show_progress: bool,
                 total_steps: int) -> tuple[dict[str, float], int]:
    """One epoch; returns the epoch means of the objective's terms (``train_loss``, ...) and skipped images."""
    _set_train_mode(model, config)
    total_micro = len(loader)
    if config.max_steps_per_epoch:
        total_micro = min(total_micro, config.max_steps_per_epoch * config.accumulate)
    sums: dict[str, float] = {}
    micro_done = 0
    skipped = 0
    step_in_epoch = 0
    columns = (TextColumn(f"epoch {epoch + 1}/{config.epochs}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn())
    with Progress(*columns, disable=not (show_progress and fabric.is_global_zero), transient=True) as progress:
        task = progress.add_task("train", total=total_micro, loss=float("nan"))
        for micro, batch in enumerate(loader):
            if micro >= total_micro:
                break
            batch = fabric.to_device(batch)
            skipped += int(batch["skipped"])
            stepping = (micro + 1) % config.accumulate == 0 or micro + 1 == total_micro
            with fabric.no_backward_sync(model, enabled=not stepping):
                terms = objective.loss(model, batch)
                _check_finite(fabric, terms["loss"], epoch, micro)
                fabric.backward(terms["loss"] / config.accumulate)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            micro_done += 1
            loss = float(terms["loss"].detach())
            if stepping:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state["global_step"] += 1
                step_in_epoch += 1
                objective.after_step(model.module, state["global_step"], total_steps)
                for callback in callbacks:
                    callback(StepEvent(epoch, step_in_epoch, state["global_step"], loss))
            progress.update(task, advance=1, loss=loss)
    means = {("train_" + name): float(fabric.all_reduce(torch.tensor(total / max(micro_done, 1)), reduce_op="mean"))
             for name, total in sums.items()}
    return means, int(fabric.all_reduce(torch.tensor(skipped), reduce_op="sum"))


def _check_finite(fabric: Fabric, loss: torch.Tensor, epoch: int, micro: int) -> None:
    finite = torch.isfinite(loss.detach()).float()
    if fabric.world_size > 1:
        finite = fabric.all_reduce(finite, reduce_op="min")
    if finite.item() < 1:
        raise NonFiniteLossError(
            f"loss became {loss.item()} at epoch {epoch + 1}, batch {micro + 1}; stopped, the last good "
            "checkpoint is kept (lower the learning rate, or check the inputs' intensity range)"
        )


@torch.no_grad()
def _validate(fabric: Fabric, model: nn.Module, loader: DataLoader, loss_fn: LossFunction, config: TrainConfig) -> dict:
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {"index": [], "prob": [], "labels": [], "mask": [], "loss": []}
    for batch in loader:
        if "image" not in batch:
            continue
        batch = fabric.to_device(batch)
        logits = model(normalise(batch["image"], config)).float()
        parts["loss"].append(loss_fn(logits, batch["labels"], batch["mask"]).reshape(1))
        parts["index"].append(torch.as_tensor(batch["index"], device=logits.device))
        parts["prob"].append(torch.sigmoid(logits))
        parts["labels"].append(batch["labels"].float())
        parts["mask"].append(batch["mask"].float())
    local = {key: torch.cat(values) for key, values in parts.items()}
    gathered = {key: fabric.all_gather(value).reshape(-1, *value.shape[1:]).cpu().numpy() for key, value in local.items()}
    _, unique = np.unique(gathered["index"], return_index=True)  # DistributedSampler pads with repeats
    auroc = mean_auroc(gathered["prob"][unique], gathered["labels"][unique], gathered["mask"][unique] > 0)
    return {"val_loss": float(np.mean(gathered["loss"])), "val_mean_auroc": auroc}


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in history))
    with open(run_dir / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
