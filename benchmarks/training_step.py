"""A training step of cxrlens against the loop a user writes by hand, same model and data, same process.

``--method supervised`` (default): against a plain PyTorch loop. ``--method simclr`` /
``byol``: :func:`cxrlens.ssl.pretrain.pretrain` against lightly's own example loop (its
``SimCLRProjectionHead`` + ``NTXentLoss``; ``BYOLProjectionHead`` / ``BYOLPredictionHead``,
momentum copies updated with ``update_momentum`` on lightly's cosine schedule,
``NegativeCosineSimilarity`` both ways), with the same backbone, batch, head sizes and the
same two-view dataset (the same augmentations, drawn in the DataLoader's workers).

Both train a ResNet-50 (1-channel stem, 14 findings, LSE pooling off: GAP + linear, as
paper 000) at ``--size`` (256) px, batch ``--batch`` (32), Adam, positive-weighted BCE, the
crop/flip/rotation augmentation, from the same prepared cache of nih-sample. cxrlens runs
:func:`cxrlens.train.supervised.train_supervised` (Lightning Fabric, progress bar, loss
checks, checkpoints at the epoch's end); the reference is the loop a user writes by hand:
DataLoader -> normalise -> forward -> loss -> backward -> step. Each step is timed from
the end of the previous one (data loading included), the first ``--warmup`` steps of each
run are dropped, and the runs alternate ``--rounds`` times; the ratio of the medians is
printed (goal: cxrlens <= 1.05x the plain loop).

    python benchmarks/training_step.py [--method supervised|simclr|byol] [--steps 6] [--rounds 2] [--size 256]
                                       [--batch 32] [--precision 32-true]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead, SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cxrlens.config import ModelConfig, PretrainConfig, TrainConfig
from cxrlens.data.cache import PreparedCache, prepare_cache
from cxrlens.data.preprocess import normalise
from cxrlens.data.registry import open_sample
from cxrlens.data.torch_datasets import CachedImageDataset, collate_skipping_failed
from cxrlens.data.transforms import supervised_augmentation
from cxrlens.models import build_model
from cxrlens.models.backbones import Backbone
from cxrlens.paths import find_data_root
from cxrlens.train import trainer as trainer_module
from cxrlens.train.losses import positive_weighted_bce, positive_weights
from cxrlens.ssl.pretrain import pretrain, pretraining_sets
from cxrlens.train.supervised import train_supervised


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=find_data_root())
    parser.add_argument("--method", default="supervised", choices=("supervised", "simclr", "byol"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--precision", default="32-true", help="32-true | bf16-mixed | 16-mixed")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


def _step_times(stamps: list[float], warmup: int) -> list[float]:
    return [later - earlier for earlier, later in zip(stamps, stamps[1:])][max(warmup - 1, 0):]


def _optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, device: str, stamps: list[float]) -> None:
    """Backward, step, and the time the step ended (after the GPU finished it)."""
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    stamps.append(time.perf_counter())


def _cxrlens_run(work: Callable[[Path], object], folder: Path, warmup: int) -> list[float]:
    """Step times of ``work(folder)`` (a cxrlens training), recorded by a callback after every optimizer step."""
    stamps: list[float] = []
    original = trainer_module.Trainer.__init__

    def with_clock(self, *args, **kwargs) -> None:  # noqa: ANN001 - the Trainer's own signature
        original(self, *args, **kwargs)
        self.callbacks.append(lambda event: stamps.append(time.perf_counter()))

    trainer_module.Trainer.__init__ = with_clock
    try:
        shutil.rmtree(folder, ignore_errors=True)
        stamps.append(time.perf_counter())
        work(folder)
    finally:
        trainer_module.Trainer.__init__ = original
    return _step_times(stamps, warmup)


def _plain_run(cache: PreparedCache, model_config: ModelConfig, train: TrainConfig, steps: int, warmup: int,
               device: str) -> list[float]:
    """The hand-written loop over the same images, augmentation, model, optimizer and loss."""
    torch.manual_seed(train.seed)
    dataset = CachedImageDataset(cache, None, supervised_augmentation(train.augment, cache.size))
    loader = DataLoader(dataset, batch_size=train.batch_size, shuffle=True, drop_last=True,
                        num_workers=train.num_workers, collate_fn=collate_skipping_failed,
                        pin_memory=device.startswith("cuda"))
    model = build_model(model_config.model_copy(update={"num_classes": len(cache.classes)})).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, betas=train.betas)
    weights = positive_weights(cache.labels, cache.masks).to(device)
    autocast = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(train.precision)
    stamps = [time.perf_counter()]
    for step, batch in enumerate(loader):
        if step == steps:
            break
        images = normalise(batch["image"].to(device, non_blocking=True), train.normalisation)
        with torch.autocast(device.split(":")[0], dtype=autocast or torch.float32, enabled=autocast is not None):
            logits = model(images)
        loss = positive_weighted_bce(logits.float(), batch["labels"].to(device), batch["mask"].to(device), weights)
        _optimizer_step(loss, optimizer, device, stamps)
    return _step_times(stamps, warmup)


def _lightly_run(dataset: Dataset, config: PretrainConfig, steps: int, warmup: int, device: str) -> list[float]:
    """lightly's example loop for SimCLR or BYOL over the same two-view dataset."""
    torch.manual_seed(config.train.seed)
    loader = DataLoader(dataset, batch_size=config.train.batch_size, shuffle=True, drop_last=True,
                        num_workers=config.train.num_workers, collate_fn=collate_skipping_failed)
    backbone = Backbone(config.encoder.backbone, in_chans=config.encoder.in_chans).to(device)
    channels, method = backbone.channels[-1], config.method
    if method.name == "simclr":
        heads = nn.ModuleList([SimCLRProjectionHead(channels, method.projection_hidden, method.projection_dim)])
        criterion = NTXentLoss(temperature=method.temperature)
    else:
        heads = nn.ModuleList([BYOLProjectionHead(channels, method.hidden, method.dim),
                               BYOLPredictionHead(method.dim, method.hidden, method.dim)])
        targets = nn.ModuleList([copy.deepcopy(backbone), copy.deepcopy(heads[0])])
        for module in targets:
            deactivate_requires_grad(module)
        criterion = NegativeCosineSimilarity()
    heads = heads.to(device)
    optimizer = torch.optim.Adam([*backbone.parameters(), *heads.parameters()], lr=config.train.lr)
    norm = config.train.normalisation
    stamps = [time.perf_counter()]
    for step, batch in enumerate(loader):
        if step == steps:
            break
        x0, x1 = (normalise(batch[key].to(device), norm) for key in ("view1", "view2"))
        if method.name == "simclr":
            loss = criterion(heads[0](backbone(x0)[-1].mean(dim=(2, 3))), heads[0](backbone(x1)[-1].mean(dim=(2, 3))))
        else:
            tau = cosine_schedule(step, steps, method.tau, 1.0)
            update_momentum(backbone, targets[0], m=tau)
            update_momentum(heads[0], targets[1], m=tau)
            p0, p1 = (heads[1](heads[0](backbone(x)[-1].mean(dim=(2, 3)))) for x in (x0, x1))
            with torch.no_grad():
                z0, z1 = (targets[1](targets[0](x)[-1].mean(dim=(2, 3))) for x in (x0, x1))
            loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
        _optimizer_step(loss, optimizer, device, stamps)
    return _step_times(stamps, warmup)


def main() -> None:
    arguments = _arguments()
    work = Path(tempfile.mkdtemp(prefix="cxrlens-training-step-"))
    try:
        cache = prepare_cache(open_sample(arguments.data_root, ["nih-sample"]), work / "cache", size=arguments.size)
        train = TrainConfig(epochs=1, batch_size=arguments.batch, accumulate=1, num_workers=2, loss="weighted-bce",
                            augment="crop-flip-rotate", scheduler="none", precision=arguments.precision,
                            accelerator=arguments.device.split(":")[0], max_steps_per_epoch=arguments.steps,
                            early_stopping=None)
        reference = "plain PyTorch" if arguments.method == "supervised" else "lightly example"
        times: dict[str, list[float]] = {"cxrlens": [], reference: []}
        for _ in range(arguments.rounds):
            if arguments.method == "supervised":
                model = ModelConfig(backbone=arguments.backbone, weights=None)
                times[reference] += _plain_run(cache, model, train, arguments.steps, arguments.warmup,
                                               arguments.device)
                times["cxrlens"] += _cxrlens_run(lambda folder: train_supervised(cache.directory, folder, model, train),
                                                 work / "run", arguments.warmup)
            else:
                config = PretrainConfig(method={"name": arguments.method}, encoder={"backbone": arguments.backbone},
                                        train=train.model_copy(update={"lr": PretrainConfig().train.lr}))
                times[reference] += _lightly_run(pretraining_sets([cache.directory], config), config, arguments.steps,
                                                 arguments.warmup, arguments.device)
                times["cxrlens"] += _cxrlens_run(lambda folder: pretrain([cache.directory], folder, config),
                                                 work / "run", arguments.warmup)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {"method": arguments.method, "reference": reference, "backbone": arguments.backbone, "size": arguments.size, "batch": arguments.batch,
              "precision": arguments.precision, "device": arguments.device, "threads": torch.get_num_threads(),
              "seconds_per_step": {name: round(value, 4) for name, value in medians.items()},
              "steps_timed": {name: len(values) for name, values in times.items()},
              "ratio": round(medians["cxrlens"] / medians[reference], 3)}
    print(json.dumps(result, indent=2))
    print(f"cxrlens / {reference} = {result['ratio']:.3f}x per step (goal <= 1.05x)")


if __name__ == "__main__":
    main()
