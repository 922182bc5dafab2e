"""``cxrlens pretrain``: SimCLR, BYOL or BYOL + CAM loss on one or more prepared caches.

Labels are never read. The images of every cache (optionally a seeded ``fraction`` of
them, paper 002's pretext fractions) are pooled; boxes, where a cache has them (NIH),
feed paper 000's CAM loss. The run folder gets ``config.yaml``, the trainer's metrics and
checkpoints (``keep_every`` keeps epoch snapshots of the encoder for t-SNE), and
``encoder.ckpt``: the online encoder alone with its normalisation and the images it saw,
which ``finetune``, ``linear-eval`` and ``tsne`` read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset

from cxrlens.checkpoints import EncoderCheckpoint, save_checkpoint
from cxrlens.config import PretrainConfig
from cxrlens.data.cache import PreparedCache
from cxrlens.data.preprocess import normalise
from cxrlens.data.provenance import data_provenance
from cxrlens.data.splits import split_by_patient
from cxrlens.models.backbones import Backbone
from cxrlens.ssl.augment import view_transform
from cxrlens.ssl.base import SSLMethod, build_method
from cxrlens.ssl.views import BoxedBatchSampler, TwoViewDataset
from cxrlens.train.objectives import Objective
from cxrlens.train.run_folder import RunFolder
from cxrlens.train.trainer import Trainer, launch

__all__ = ["PretrainObjective", "build_ssl_model", "pretrain", "pretraining_sets"]


class PretrainObjective(Objective):
    """Normalise both views, run the method, and let it update its targets after each step;
    a snapshot is the online encoder (:class:`~cxrlens.checkpoints.EncoderCheckpoint`)."""

    def __init__(self, describes: EncoderCheckpoint) -> None:
        self.describes = describes

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        norm = self.describes.normalisation
        return model(normalise(batch["view1"], norm), normalise(batch["view2"], norm), box_mask=batch["box_mask"],
                     box_findings=batch["box_findings"])

    def after_step(self, module: nn.Module, global_step: int, total_steps: int) -> None:
        module.after_step(global_step, total_steps)

    def snapshot(self, module: nn.Module, epoch: int, metrics: dict[str, float]) -> EncoderCheckpoint:
        return self.describes.model_copy(update={"state": module.encoder.state_dict(), "epoch": epoch})


def build_ssl_model(config: PretrainConfig) -> SSLMethod:
    """The method ``config.method`` names, around a fresh (or initialised) encoder."""
    encoder = Backbone(config.encoder.backbone, weights=config.encoder.weights, in_chans=config.encoder.in_chans)
    return build_method(config.method, encoder)


def pretraining_sets(cache_dirs: Sequence[str | Path], config: PretrainConfig,
                     exclude: dict[str, Sequence[int]] | None = None) -> ConcatDataset:
    """Two-view datasets over every ready image of every cache (a seeded ``fraction`` of each).

    ``exclude`` maps a cache directory to item indices to leave out (e.g. a held-out split).
    """
    caches = [PreparedCache(directory) for directory in cache_dirs]
    if not caches:
        raise ValueError("pretraining needs at least one prepared cache")
    sizes = {cache.size for cache in caches}
    if len(sizes) > 1:
        listing = ", ".join(f"{cache.directory} ({cache.size} px)" for cache in caches)
        raise ValueError(f"caches must share one image size to be pooled: {listing}")
    size = sizes.pop()
    view1, view2 = view_transform(config.online_view, size), view_transform(config.target_view, size)
    generator = np.random.default_rng(config.train.seed)
    parts = []
    for directory, cache in zip(cache_dirs, caches):
        indices = np.setdiff1d(cache.ready_indices(), np.asarray((exclude or {}).get(str(directory), []), dtype=int))
        if config.fraction < 1:
            keep = max(1, round(config.fraction * len(indices)))
            indices = np.sort(generator.choice(indices, size=keep, replace=False))
        parts.append(TwoViewDataset(cache, indices, view1, view2, config.method.box_findings()))
    return ConcatDataset(parts)


def held_out_boxed_test(cache_dirs: Sequence[str | Path], seed: int) -> dict[str, list[int]]:
    """Per cache with boxes: the indices of its patient-level test split (20 %, not the official lists).

    The same split as ``cxrlens evaluate --split test --no-official-splits`` with the same seed.
    """
    held_out = {}
    for directory in cache_dirs:
        cache = PreparedCache(directory)
        if any(cache.boxes(int(i)) for i in cache.ready_indices()):
            splits = split_by_patient(cache.items(), val_fraction=0.1, test_fraction=0.2, seed=seed, use_official=False)
            held_out[str(directory)] = [int(i) for i in splits.test]
    return held_out


def pretrain(cache_dirs: Sequence[str | Path], run_dir: str | Path, config: PretrainConfig, resume: bool = False,
             overwrite: bool = False, show_progress: bool = True,
             exclude: dict[str, Sequence[int]] | None = None) -> dict:
    """Pretrain an encoder; returns the trainer's summary plus ``encoder`` (the encoder.ckpt path)."""
    exclude = {**(exclude or {})}
    if config.hold_out_boxed_test:
        for directory, indices in held_out_boxed_test(cache_dirs, config.train.seed).items():
            exclude[directory] = [*exclude.get(directory, []), *indices]
    train_set = pretraining_sets(cache_dirs, config, exclude)
    boxed = np.concatenate([part.boxed for part in train_set.datasets])
    split = {"hold_out_boxed_test": config.hold_out_boxed_test, "seed": config.train.seed, "fraction": config.fraction}
    describes = EncoderCheckpoint(
        state={}, method=config.method.name, encoder=config.encoder, normalisation=config.train.normalisation,
        cam_findings=list(config.method.box_findings()),
        provenance=[data_provenance(part.cache, {"pretrain": part.indices}, split) for part in train_set.datasets])
    fabric = launch(config.train)
    model = build_ssl_model(config)
    batch_sampler = None
    if config.method.boxes_per_batch():
        batch_sampler = BoxedBatchSampler(boxed, config.train.batch_size, config.method.boxes_per_batch(),
                                          config.train.seed, fabric.world_size, fabric.global_rank)
    record = {"caches": [str(d) for d in cache_dirs], "images": len(train_set), "boxed_images": int(boxed.sum()),
              "held_out": {d: len(i) for d, i in exclude.items()}, **config.model_dump(mode="json")}
    objective = PretrainObjective(describes)
    trainer = Trainer(config.train, RunFolder(run_dir, cache_dirs), fabric, show_progress=show_progress)
    summary = trainer.fit(model, objective, train_set, batch_sampler=batch_sampler, resume=resume, overwrite=overwrite,
                          record=record)
    encoder_path = trainer.run.path / "encoder.ckpt"
    if fabric.is_global_zero:
        save_checkpoint(objective.snapshot(model, config.train.epochs, {}), encoder_path)
    fabric.barrier()
    return {**summary, "encoder": str(encoder_path), "images": len(train_set)}
