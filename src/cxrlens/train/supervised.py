"""Supervised training on a prepared cache (the papers' baselines: scratch, ImageNet-init, MultiRes).

Splits are patient-level (official test list kept, validation drawn by patient); a label
fraction subsamples the training patients stratified; the resolved config, metrics and
checkpoints go to the run folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cxrlens.config import ModelConfig, TrainConfig, dump_yaml
from cxrlens.data.cache import PreparedCache
from cxrlens.data.splits import label_fraction, split_by_patient
from cxrlens.data.torch_datasets import CachedImageDataset
from cxrlens.data.transforms import supervised_augmentation
from cxrlens.models import build_model
from cxrlens.train.engine import fit, make_fabric, make_loss
from cxrlens.train.losses import positive_weights


def train_supervised(cache_dir: str | Path, run_dir: str | Path, model_config: ModelConfig, train_config: TrainConfig,
                     fraction: float = 1.0, val_fraction: float = 0.1, use_official_splits: bool = True,
                     resume: bool = False, overwrite: bool = False, show_progress: bool = True) -> dict:
    """Train a classifier on ``cache_dir``'s training split; returns the engine's summary."""
    cache = PreparedCache(cache_dir)
    items = cache.items()
    ready = set(cache.ready_indices().tolist())
    splits = split_by_patient(items, val_fraction=val_fraction, seed=train_config.seed, use_official=use_official_splits)
    train_indices = [i for i in label_fraction(items, splits.train, fraction, seed=train_config.seed) if i in ready]
    val_indices = [i for i in splits.val if i in ready]
    if not train_indices or not val_indices:
        raise ValueError(f"{cache_dir}: empty training ({len(train_indices)}) or validation ({len(val_indices)}) split; "
                         "for a set that is all in the official test list pass use_official_splits=False")
    model_config = model_config.model_copy(update={"num_classes": len(cache.classes)})
    fabric = make_fabric(train_config)
    fabric.launch()
    torch.manual_seed(train_config.seed)
    model = build_model(model_config)
    augment = supervised_augmentation(cache.size) if train_config.augment else None
    train_set = CachedImageDataset(cache, train_indices, transform=augment)
    val_set = CachedImageDataset(cache, val_indices)
    pos_weight = positive_weights(cache.labels[train_indices], cache.masks[train_indices])
    run_dir = Path(run_dir)
    if fabric.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_yaml({"cache": str(cache_dir), "label_fraction": fraction, "val_fraction": val_fraction,
                   "use_official_splits": use_official_splits, "classes": list(cache.classes),
                   "train_images": len(train_indices), "val_images": len(val_indices),
                   "model": model_config.model_dump(mode="json"), "train": train_config.model_dump(mode="json")},
                  run_dir / "config.yaml")
    extra = {"model_config": model_config.model_dump(mode="json"), "classes": list(cache.classes),
             "normalisation": {"mean": train_config.mean, "std": train_config.std},
             "input": {"size": cache.size, "fit": cache.fit}}
    return fit(model, train_set, val_set, train_config, run_dir, resume=resume, overwrite=overwrite,
               loss_fn=make_loss(train_config, pos_weight), fabric=fabric, extra_state=extra, show_progress=show_progress)
