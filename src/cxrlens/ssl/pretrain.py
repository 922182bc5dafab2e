"""``cxrlens pretrain``: SimCLR, BYOL or BYOL + CAM loss on one or more prepared caches.

Labels are never read. The images of every cache (all of them or the training part, a
seeded ``fraction`` of them: paper 002's pretext fractions) are pooled; boxes, where a
cache has them (NIH), feed paper 000's CAM loss, except those of the held-out boxed
patients, which pretraining never sees (:func:`cxrlens.data.roles.pretrain_roles`). The run folder gets ``config.yaml``, the trainer's metrics and
checkpoints (``keep_epochs`` keeps epoch snapshots of the encoder for t-SNE), and
``encoder.ckpt``: the online encoder alone with its normalisation and the images it saw,
which ``finetune``, ``linear-eval`` and ``tsne`` read. ``views_on: device`` draws the views
on the training device (:mod:`cxrlens.ssl.device_views`) instead of in the DataLoader's workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset
from torchvision.transforms import v2

from cxrlens.checkpoints import EncoderCheckpoint, save_checkpoint
from cxrlens.config import PretrainConfig
from cxrlens.data.cache import PreparedCache
from cxrlens.data.preprocess import normalise, pixel_statistics
from cxrlens.data.provenance import data_provenance, digest
from cxrlens.data.roles import pretrain_roles
from cxrlens.models.backbones import Backbone
from cxrlens.ssl.augment import view_transform
from cxrlens.ssl.base import SSLMethod, build_method
from cxrlens.ssl.device_views import DeviceViews
from cxrlens.ssl.views import TwoViewDataset
from cxrlens.train.boxed_batches import BoxedBatchSampler
from cxrlens.train.objectives import Objective
from cxrlens.train.run_folder import RunFolder
from cxrlens.train.trainer import Trainer, launch

__all__ = ["PretrainObjective", "build_ssl_model", "pretrain", "pretraining_sets"]


class PretrainObjective(Objective):
    """Normalise both views, run the method, and let it update its targets after each step;
    a snapshot is the online encoder (:class:`~cxrlens.checkpoints.EncoderCheckpoint`)."""

    def __init__(self, describes: EncoderCheckpoint, views: DeviceViews | None = None) -> None:
        self.describes = describes
        self.views = views

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        norm = self.describes.normalisation
        view1, view2, box_mask = batch["view1"], batch["view2"], batch["box_mask"]
        if self.views is not None:  # views_on: device - the workers sent the images unaugmented
            view1, view2, box_mask = self.views(view1, view2, box_mask)
        return model(normalise(view1, norm), normalise(view2, norm), box_mask=box_mask,
                     box_findings=batch["box_findings"])

    def after_step(self, module: nn.Module, global_step: int, total_steps: int) -> None:
        module.after_step(global_step, total_steps)

    def snapshot(self, module: nn.Module, epoch: int, metrics: dict[str, float]) -> EncoderCheckpoint:
        return self.describes.model_copy(update={"state": module.encoder.state_dict(), "epoch": epoch})


def build_ssl_model(config: PretrainConfig) -> SSLMethod:
    """The method ``config.method`` names, around a fresh (or initialised) encoder."""
    encoder = Backbone(config.encoder.backbone, weights=config.encoder.weights, in_chans=config.encoder.in_chans)
    return build_method(config.method, encoder)


def pretraining_sets(cache_dirs: Sequence[str | Path], config: PretrainConfig) -> ConcatDataset:
    """Two-view datasets over the images :func:`cxrlens.data.roles.pretrain_roles` gives each cache (all or the
    training part, the held-out boxed patients left out, a seeded ``fraction``)."""
    caches = [PreparedCache(directory) for directory in cache_dirs]
    if not caches:
        raise ValueError("pretraining needs at least one prepared cache")
    sizes = {cache.size for cache in caches}
    if len(sizes) > 1:
        listing = ", ".join(f"{cache.directory} ({cache.size} px)" for cache in caches)
        raise ValueError(f"caches must share one image size to be pooled: {listing}")
    size = sizes.pop()
    if config.views_on == "device":  # DeviceViews draws them from the unaugmented images
        view1 = view2 = v2.Identity()
    else:
        view1, view2 = view_transform(config.online_view, size), view_transform(config.target_view, size)
    roles = pretrain_roles([(cache.items(), cache.ready_indices()) for cache in caches], config)
    return ConcatDataset([TwoViewDataset(cache, part["pretrain"], view1, view2, config.method.box_findings())
                          for cache, part in zip(caches, roles)])


def pretrain(cache_dirs: Sequence[str | Path], run_dir: str | Path, config: PretrainConfig, resume: bool = False,
             overwrite: bool = False, show_progress: bool = True) -> dict:
    """Pretrain an encoder; returns the trainer's summary plus ``encoder`` (the encoder.ckpt path)."""
    train_set = pretraining_sets(cache_dirs, config)
    if not len(train_set):
        raise ValueError(f"{', '.join(map(str, cache_dirs))}: no images left to pretrain on")
    boxed = np.concatenate([part.boxed for part in train_set.datasets])
    if config.train.intensity_stats == "training-images":
        stats = pixel_statistics([(part.cache.images, part.indices) for part in train_set.datasets],
                                 seed=config.train.seed)
        config = config.model_copy(update={"train": config.train.model_copy(update=stats.model_dump())})
    split = {"images": config.images, "box_test_fraction": config.box_test_fraction, "seed": config.train.seed,
             "fraction": config.fraction}
    provenance = [data_provenance(part.cache, {"pretrain": part.indices,
                                               **({"cam-loss": part.indices[part.boxed]} if part.boxed.any() else {})},
                                  split) for part in train_set.datasets]
    describes = EncoderCheckpoint(
        state={}, method=config.method.name, encoder=config.encoder, normalisation=config.train.normalisation,
        cam_findings=list(config.method.box_findings()), provenance=provenance)
    fabric = launch(config.train)
    model = build_ssl_model(config)
    batch_sampler = None
    if config.method.boxes_per_batch():
        batch_sampler = BoxedBatchSampler(boxed, config.train.batch_size, config.method.boxes_per_batch(),
                                          config.train.seed, fabric.world_size, fabric.global_rank)
    record = {"caches": [str(d) for d in cache_dirs], "images": len(train_set), "boxed_images": int(boxed.sum()),
              **config.model_dump(mode="json")}
    size = train_set.datasets[0].cache.size
    views = DeviceViews(config.online_view, config.target_view, size) if config.views_on == "device" else None
    objective = PretrainObjective(describes, views)
    trainer = Trainer(config.train, RunFolder(run_dir, cache_dirs), fabric, show_progress=show_progress)
    summary = trainer.fit(model, objective, train_set, batch_sampler=batch_sampler, resume=resume, overwrite=overwrite,
                          record=record, data=digest(provenance))
    encoder_path = trainer.run.path / "encoder.ckpt"
    if fabric.is_global_zero:
        save_checkpoint(objective.snapshot(model, config.train.epochs, {}), encoder_path)
    fabric.barrier()
    return {**summary, "encoder": str(encoder_path), "images": len(train_set)}
