"""The one training loop, on Lightning Fabric: CPU, one GPU or DDP; AMP; accumulation; resume.

Shaped like Lightning Fabric's ``build_your_own_trainer`` example: a :class:`Trainer` holds
the loop, an :class:`~cxrlens.train.objectives.Objective` says what a step computes, and
the trainer knows no metric of its own. Devices, DDP process groups, AMP autocast and
gradient sync are Fabric's; the trainer adds what the papers need around them:

* gradient accumulation (paper 003: batch 32 x 3) without gradient all-reduce on the
  accumulating micro-steps (``fabric.no_backward_sync``);
* Adam / AdamW / SGD; ReduceLROnPlateau on the training loss (paper 000: x0.1
  after 4 epochs, down to 1e-6) or the monitored validation metric, or cosine;
* after every epoch, written atomically into the :class:`~cxrlens.train.run_folder.RunFolder`:
  ``last.ckpt`` (a :class:`~cxrlens.checkpoints.TrainingState`), ``best.ckpt`` (the
  objective's snapshot at the best monitored epoch) and ``epoch-NNNN.ckpt`` snapshots;
  early stopping on the monitored metric;
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
"""

from __future__ import annotations

import math
import random
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

from cxrlens.checkpoints import TrainingState, load_checkpoint, save_checkpoint
from cxrlens.config import TrainConfig
from cxrlens.data.torch_datasets import collate_skipping_failed
from cxrlens.devices import resolve_device
from cxrlens.train.objectives import Objective
from cxrlens.tracking import Tracker
from cxrlens.train.run_folder import RunFolder


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class StepEvent:
    """What a callback sees after each optimizer step."""

    epoch: int
    step_in_epoch: int
    global_step: int
    loss: float


class EpochBatchSampler(Protocol):
    """A batch sampler whose order is a function of the epoch (and its own seed and rank)."""

    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self) -> Iterator[list[int]]: ...

    def __len__(self) -> int: ...


def training_precision(precision: str, accelerator: str) -> str:
    """``precision`` where ``accelerator`` supports it: on a CPU, bf16-mixed only where oneDNN has bfloat16 kernels
    (elsewhere emulated, slower than float32) and 16-mixed never; otherwise 32-true."""
    if accelerator == "cuda" or precision == "32-true":
        return precision
    return "bf16-mixed" if precision == "bf16-mixed" and _cpu_has_bf16() else "32-true"


def _cpu_has_bf16() -> bool:
    """Whether oneDNN has bfloat16 kernels on this CPU (AVX512-BF16 or AMX); False on builds without oneDNN."""
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def make_fabric(config: TrainConfig) -> Fabric:
    """A Fabric for ``config``'s device (``auto``: the GPU when there is one), processes and precision."""
    accelerator = resolve_device(config.accelerator)
    return Fabric(accelerator=accelerator, devices=config.devices, strategy=config.strategy,
                  precision=training_precision(config.precision, accelerator))


def launch(config: TrainConfig) -> Fabric:
    """Start ``config``'s processes (a no-op launch under torchrun) and seed the model initialisation."""
    fabric = make_fabric(config)
    fabric.launch()
    torch.manual_seed(config.seed)
    return fabric


class Trainer:
    """``Trainer(config, run_dir).fit(model, objective, train_set, val_set)`` (see the module docstring).

    ``fabric``: an already launched Fabric (default: one made from ``config`` and launched here);
    ``callbacks`` see a :class:`StepEvent` after every optimizer step.
    """

    def __init__(self, config: TrainConfig, run: RunFolder | str | Path, fabric: Fabric | None = None,
                 callbacks: Sequence[Callable[[StepEvent], None]] = (), show_progress: bool = True) -> None:
        self.config = config
        self.run = run if isinstance(run, RunFolder) else RunFolder(run)
        self.fabric = fabric or launch(config)
        self.callbacks = list(callbacks)
        self.show_progress = show_progress

    def fit(self, model: nn.Module, objective: Objective, train_set: Dataset, val_set: Dataset | None = None, *,
            batch_sampler: EpochBatchSampler | None = None, resume: bool = False, overwrite: bool = False,
            record: dict | None = None, data: str = "") -> dict:
        """Train; returns ``{"history", "best_epoch"}`` and, with validation, ``"best_<monitor>"``.

        ``record`` (what ran: config, data) becomes the run's ``config.yaml``, with where it ran
        (``trained_on``: device type, process count, GPU name), and the tracker's hyperparameters
        (``config.logger``, :mod:`cxrlens.tracking`: the epochs' metrics too). ``batch_sampler``
        replaces the shuffled DistributedSampler (it must split the batches between ranks itself).
        ``data`` is a digest of the images each role trains on
        (:func:`cxrlens.data.provenance.digest`): a resume with settings that select other images is
        refused, so a checkpoint never records other images than those that trained it.
        """
        fabric, config, run = self.fabric, self.config, self.run
        tracker = Tracker(config.logger if fabric.is_global_zero else "none", run.path)  # a missing logger fails here
        run.claim(resume, overwrite, clear=fabric.is_global_zero)
        fabric.barrier()
        if record is not None and fabric.is_global_zero:
            described = {**record, "trained_on": _hardware(fabric)}
            run.write_config(described)
            tracker.hyperparameters(described)
        try:
            return self._fit(model, objective, train_set, val_set, batch_sampler, resume, data, tracker)
        except BaseException:
            tracker.close("failed")
            raise

    def _fit(self, model: nn.Module, objective: Objective, train_set: Dataset, val_set: Dataset | None,
             batch_sampler: EpochBatchSampler | None, resume: bool, data: str, tracker: Tracker) -> dict:
        fabric, config, run = self.fabric, self.config, self.run
        monitor = objective.monitor if val_set is not None else None
        if monitor is None and config.scheduler == "plateau" and config.plateau_on == "val-metric":
            raise ValueError("plateau_on: val-metric follows a validation metric; without a validation set use "
                             "train-loss, or the cosine or no scheduler")
        if config.sync_batchnorm and fabric.world_size > 1 and fabric.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = _optimizer(model, config)
        scheduler = _scheduler(optimizer, config)
        wrapped, optimizer = fabric.setup(model, optimizer)
        train_loader, sampler, generator = _train_loader(fabric, train_set, config, batch_sampler)
        val_loader = _val_loader(fabric, val_set, config) if val_set is not None else None
        total_steps = config.epochs * _steps_per_epoch(len(train_loader), config)

        state = {"epoch": 0, "global_step": 0, "best": -math.inf, "best_epoch": -1, "history": []}
        if resume and run.last.exists():
            saved = load_checkpoint(run.last, TrainingState)
            if saved.data != data:
                raise ValueError(f"{run.path}: was started on other images than these settings select (a split, "
                                 "fraction or seed changed); resume with the settings it started with, or train in a "
                                 "new folder")
            wrapped.load_state_dict(saved.state)
            optimizer.load_state_dict(saved.optimizer)
            if scheduler is not None:
                scheduler.load_state_dict(saved.scheduler)
            state.update({key: getattr(saved, key) for key in state})
            fabric.print(f"resuming {run.path} after epoch {state['epoch']} (step {state['global_step']})")

        for epoch in range(state["epoch"], config.epochs):
            started = time.perf_counter()
            _seed_epoch(config.seed, epoch, fabric.global_rank, sampler, generator)
            terms, skipped = self._train_epoch(wrapped, optimizer, train_loader, objective, epoch, state, total_steps)
            val = self._validate(wrapped, val_loader, objective) if val_loader is not None else {}
            score = val.get(monitor, math.nan) if monitor else math.nan
            if scheduler is not None:
                _step_scheduler(scheduler, terms.get("train_loss", math.nan) if config.plateau_on == "train-loss"
                                else score)
            row = {"epoch": epoch + 1, "step": state["global_step"], **terms, **val,
                   "lr": optimizer.param_groups[0]["lr"], "skipped_images": skipped,
                   "seconds": round(time.perf_counter() - started, 3)}
            state["history"].append(row)
            tracker.metrics({key: value for key, value in row.items() if key not in ("epoch", "step")}, epoch + 1)
            improved = math.isfinite(score) and score > state["best"]
            if improved:
                state["best"], state["best_epoch"] = score, epoch + 1
            state["epoch"] = epoch + 1
            if fabric.is_global_zero:
                self._save(wrapped.module, objective, optimizer, scheduler, state, val, improved, data)
            fabric.barrier()
            fabric.print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            if config.early_stopping and state["best_epoch"] > 0 and epoch + 1 - state["best_epoch"] >= config.early_stopping:
                fabric.print(f"early stop: no better {monitor} for {config.early_stopping} epochs")
                break
        tracker.artifacts([run.path / "config.yaml", run.path / "metrics.csv"])
        tracker.close()
        summary = {"history": state["history"], "best_epoch": state["best_epoch"]}
        return {**summary, f"best_{monitor}": state["best"]} if monitor else summary

    def _save(self, module: nn.Module, objective: Objective, optimizer: torch.optim.Optimizer, scheduler: object,
              state: dict, val: dict, improved: bool, data: str) -> None:
        run, epoch = self.run, state["epoch"]
        if improved:
            save_checkpoint(objective.snapshot(module, epoch, val), run.best)
        if epoch in self.config.keep_epochs:
            save_checkpoint(objective.snapshot(module, epoch, val), run.snapshot(epoch))
        save_checkpoint(TrainingState(state=module.state_dict(), optimizer=optimizer.state_dict(),
                                      scheduler=scheduler.state_dict() if scheduler is not None else None,
                                      data=data, **state), run.last)
        run.write_history(state["history"])

    def _train_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                     objective: Objective, epoch: int, state: dict, total_steps: int) -> tuple[dict[str, float], int]:
        """One epoch; returns the epoch means of the objective's terms (``train_loss``, ...) and skipped images."""
        fabric, config = self.fabric, self.config
        _set_train_mode(model, config)
        total_micro = len(loader)
        if config.max_steps_per_epoch:
            total_micro = min(total_micro, config.max_steps_per_epoch * config.accumulate)
        sums: dict[str, float] = {}
        micro_done = skipped = step_in_epoch = 0
        columns = (TextColumn(f"epoch {epoch + 1}/{config.epochs}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn())
        with Progress(*columns, disable=not (self.show_progress and fabric.is_global_zero), transient=True) as progress:
            task = progress.add_task("train", total=total_micro, loss=float("nan"))
            for micro, batch in enumerate(loader):
                if micro >= total_micro:
                    break
                batch = fabric.to_device(batch)
                skipped += int(batch["skipped"])
                stepping = (micro + 1) % config.accumulate == 0 or micro + 1 == total_micro
                with fabric.no_backward_sync(model, enabled=not stepping):
                    terms = objective.training_step(model, batch)
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
                    for callback in self.callbacks:
                        callback(StepEvent(epoch, step_in_epoch, state["global_step"], loss))
                progress.update(task, advance=1, loss=loss)
        means = {("train_" + name): float(fabric.all_reduce(torch.tensor(total / max(micro_done, 1)), reduce_op="mean"))
                 for name, total in sums.items()}
        return means, int(fabric.all_reduce(torch.tensor(skipped), reduce_op="sum"))

    @torch.no_grad()
    def _validate(self, model: nn.Module, loader: DataLoader, objective: Objective) -> dict[str, float]:
        model.eval()
        parts: dict[str, list[torch.Tensor]] = {}
        for batch in loader:
            if "image" not in batch:
                continue
            for name, value in objective.validation_step(model, self.fabric.to_device(batch)).items():
                parts.setdefault(name, []).append(value)
        local = {name: torch.cat(values) for name, values in parts.items()}
        gathered = {name: self.fabric.all_gather(value).reshape(-1, *value.shape[1:]).cpu().numpy()
                    for name, value in local.items()}
        return objective.validation_metrics(gathered)


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(parameters, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):  # noqa: ANN202 - torch scheduler
    if config.scheduler == "plateau":
        mode = "min" if config.plateau_on == "train-loss" else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=config.plateau_factor,
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
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers,
                      collate_fn=collate_skipping_failed, generator=torch.Generator().manual_seed(config.seed))


def _seed_epoch(seed: int, epoch: int, rank: int, sampler: DistributedSampler | EpochBatchSampler,
                generator: torch.Generator) -> None:
    """Derive every random stream of this epoch from (seed, epoch, rank)."""
    sampler.set_epoch(epoch)
    epoch_seed = (seed * 1_000_003 + epoch) * 1_009 + rank
    generator.manual_seed(epoch_seed)
    torch.manual_seed(epoch_seed)
    random.seed(epoch_seed)
    np.random.seed(epoch_seed % 2**32)


def _set_train_mode(model: nn.Module, config: TrainConfig) -> None:
    model.train()
    if config.freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _check_finite(fabric: Fabric, loss: torch.Tensor, epoch: int, micro: int) -> None:
    finite = torch.isfinite(loss.detach()).float()
    if fabric.world_size > 1:
        finite = fabric.all_reduce(finite, reduce_op="min")
    if finite.item() < 1:
        raise NonFiniteLossError(
            f"loss became {loss.item()} at epoch {epoch + 1}, batch {micro + 1}; stopped, the last good "
            "checkpoint is kept (lower the learning rate, or check the inputs' intensity range)"
        )


def _hardware(fabric: Fabric) -> str:
    """Where a run trains, e.g. ``cpu x 1`` or ``cuda x 4 (NVIDIA H100 80GB HBM3)``."""
    where = f"{fabric.device.type} x {fabric.world_size}"
    return f"{where} ({torch.cuda.get_device_name(fabric.device)})" if fabric.device.type == "cuda" else where
