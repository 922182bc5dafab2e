"""``cxrlens pretrain``: SimCLR, BYOL or BYOL + CAM loss on one or more prepared caches.

Labels are never read. The images of every cache (optionally a seeded ``fraction`` of
them, paper 002's pretext fractions) are pooled; boxes, where a cache has them (NIH),
feed paper 000's CAM loss. The run folder gets ``config.yaml``, the engine's metrics and
checkpoints (``keep_every`` keeps epoch snapshots for t-SNE), and ``encoder.ckpt``: the
online encoder alone, which ``finetune``, ``linear-eval`` and ``tsne`` read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset

from cxrlens.config import PretrainConfig, TrainConfig, dump_yaml
from cxrlens.data.cache import PreparedCache
from cxrlens.data.splits import split_by_patient
from cxrlens.models.backbones import Backbone
from cxrlens.ssl.augment import view_transform
from cxrlens.ssl.byol import BYOL
from cxrlens.ssl.simclr import SimCLR
from cxrlens.ssl.views import BoxedBatchSampler, TwoViewDataset
from cxrlens.train.checkpoint import save_atomic
from cxrlens.train.engine import fit, make_fabric, normalise

__all__ = ["PretrainObjective", "build_ssl_model", "pretrain", "pretraining_sets"]


class PretrainObjective:
    """Normalise both views, run the SSL module, and update BYOL's target after each step."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def loss(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        return model(normalise(batch["view1"], self.config), normalise(batch["view2"], self.config),
                     box_mask=batch["box_mask"], box_findings=batch["box_findings"])

    def after_step(self, module: nn.Module, global_step: int, total_steps: int) -> None:
        if isinstance(module, BYOL):
            module.update_target(global_step, total_steps)


def build_ssl_model(config: PretrainConfig) -> SimCLR | BYOL:
    """The SimCLR or BYOL module ``config`` describes, around a fresh (or initialised) encoder."""
    encoder = Backbone(config.encoder.backbone, weights=config.encoder.weights, in_chans=config.encoder.in_chans)
    if config.method == "simclr":
        return SimCLR(encoder, config.projection, config.projection_hidden, config.projection_dim,
                      config.temperature, config.gather_distributed)
    findings = len(config.cam_findings) if config.method == "byol-cam" else 0
    return BYOL(encoder, config.byol_hidden, config.byol_dim, config.tau, config.tau_schedule, findings,
                config.cam_lambda, config.cam_resolution, config.cam_relu)


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
    findings = config.cam_findings if config.method == "byol-cam" else ()
    generator = np.random.default_rng(config.train.seed)
    parts = []
    for directory, cache in zip(cache_dirs, caches):
        indices = np.setdiff1d(cache.ready_indices(), np.asarray((exclude or {}).get(str(directory), []), dtype=int))
        if config.fraction < 1:
            keep = max(1, round(config.fraction * len(indices)))
            indices = np.sort(generator.choice(indices, size=keep, replace=False))
        parts.append(TwoViewDataset(cache, indices, view1, view2, findings))
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
    """Pretrain an encoder; returns the engine's summary plus ``encoder`` (the encoder.ckpt path)."""
    exclude = {**(exclude or {})}
    if config.hold_out_boxed_test:
        for directory, indices in held_out_boxed_test(cache_dirs, config.train.seed).items():
            exclude[directory] = [*exclude.get(directory, []), *indices]
    train_set = pretraining_sets(cache_dirs, config, exclude)
    boxed = np.concatenate([part.boxed for part in train_set.datasets])
    fabric = make_fabric(config.train)
    fabric.launch()
    torch.manual_seed(config.train.seed)
    model = build_ssl_model(config)
    batch_sampler = None
    if config.method == "byol-cam" and config.boxed_per_batch:
        batch_sampler = BoxedBatchSampler(boxed, config.train.batch_size, config.boxed_per_batch, config.train.seed,
                                          fabric.world_size, fabric.global_rank)
    run_dir = Path(run_dir)
    if fabric.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_yaml({"caches": [str(d) for d in cache_dirs], "images": len(train_set), "boxed_images": int(boxed.sum()),
                   "held_out": {d: len(i) for d, i in exclude.items()},
                   **config.model_dump(mode="json")}, run_dir / "config.yaml")
    identity = {"kind": "pretrain", "method": config.method,
                "encoder_config": config.encoder.model_dump(mode="json"), "cam_findings": list(config.cam_findings)}
    summary = fit(model, train_set, None, config.train, run_dir, resume=resume, overwrite=overwrite, fabric=fabric,
                  extra_state=identity, show_progress=show_progress, objective=PretrainObjective(config.train),
                  batch_sampler=batch_sampler)
    encoder_path = run_dir / "encoder.ckpt"
    if fabric.is_global_zero:
        save_atomic({**identity, "encoder": model.encoder.state_dict()}, encoder_path)
    fabric.barrier()
    return {**summary, "encoder": str(encoder_path), "images": len(train_set)}
