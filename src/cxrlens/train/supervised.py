"""Supervised training on a prepared cache (the papers' baselines: scratch, ImageNet-init, MultiRes),
and fine-tuning a self-supervised encoder with labels (papers 000 and 001).

Splits are patient-level (:func:`cxrlens.data.roles.training_roles`: official test list kept,
validation drawn by patient, paper 003's healthy-image subset as an option); a label
fraction subsamples the training patients stratified; the resolved config, metrics and
checkpoints go to the run folder, and ``best.ckpt`` records which images trained and
validated the model (:class:`cxrlens.checkpoints.DataProvenance`).

Fine-tuning builds the classifier around the pretrained encoder (its backbone name and
input channels are taken from the checkpoint) with paper 000's linear multi-label head or
paper 001's two-FC binary head (``ModelConfig.head = "mlp"``), and normalises images as
the encoder was pretrained unless the train config sets ``mean`` / ``std``. Freeze policies: ``none``
(everything trains), ``last-blocks`` (only stages 3-4 and the head, as paper 003 trains),
``all`` (the head alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


from cxrlens.checkpoints import ClassifierCheckpoint, DataProvenance, EncoderCheckpoint, load_checkpoint
from cxrlens.config import InputSpec, ModelConfig, SplitConfig, TrainConfig
from cxrlens.data.cache import PreparedCache
from cxrlens.data.preprocess import pixel_statistics
from cxrlens.data.provenance import data_provenance, digest
from cxrlens.data.roles import training_roles
from cxrlens.data.torch_datasets import CachedImageDataset
from cxrlens.data.transforms import supervised_augmentation
from cxrlens.models import build_model
from cxrlens.train.losses import positive_weights
from cxrlens.train.objectives import SupervisedObjective, make_loss
from cxrlens.train.run_folder import RunFolder
from cxrlens.train.trainer import Trainer, launch

FREEZE_POLICIES: dict[str, int] = {"none": 0, "last-blocks": 3, "all": 5}


def train_supervised(cache_dir: str | Path, run_dir: str | Path, model_config: ModelConfig, train_config: TrainConfig,
                     fraction: float = 1.0, split: SplitConfig = SplitConfig(), resume: bool = False,
                     overwrite: bool = False, show_progress: bool = True,
                     provenance: Sequence[DataProvenance] = ()) -> dict:
    """Train a classifier on ``cache_dir``'s training split; returns the trainer's summary.

    ``provenance``: what the model saw before (a pretrained encoder's images), recorded in its checkpoints too.
    """
    cache = PreparedCache(cache_dir)
    roles = training_roles(cache.items(), cache.classes, cache.ready_indices(), split, fraction, train_config.seed)
    train_indices, val_indices = roles["train"], roles["val"]
    if not len(train_indices) or not len(val_indices):
        raise ValueError(f"{cache_dir}: empty training ({len(train_indices)}) or validation ({len(val_indices)}) split; "
                         "for a set that is all in the official test list use --splits patient")
    if train_config.intensity_stats == "training-images":
        train_config = train_config.model_copy(update=pixel_statistics([(cache.images, train_indices)],
                                                                       seed=train_config.seed).model_dump())
    model_config = model_config.model_copy(update={"num_classes": len(cache.classes)})
    recorded = {**split.model_dump(), "seed": train_config.seed, "label_fraction": fraction}
    describes = ClassifierCheckpoint(
        state={}, network=model_config, classes=list(cache.classes), input=InputSpec(size=cache.size, fit=cache.fit),
        normalisation=train_config.normalisation,
        provenance=[*provenance, data_provenance(cache, roles, recorded)])
    fabric = launch(train_config)
    model = build_model(model_config)
    pos_weight = positive_weights(cache.labels[train_indices], cache.masks[train_indices])
    record = {"cache": str(cache_dir), "label_fraction": fraction, "split": split.model_dump(),
              "classes": list(cache.classes), "train_images": len(train_indices), "val_images": len(val_indices),
              "model": model_config.model_dump(mode="json"), "train": train_config.model_dump(mode="json")}
    inputs = [cache_dir, *([model_config.encoder] if model_config.encoder else [])]
    trainer = Trainer(train_config, RunFolder(run_dir, inputs), fabric, show_progress=show_progress)
    augment = supervised_augmentation(train_config.augment, cache.size)
    objective = SupervisedObjective(make_loss(train_config, pos_weight), describes, train_config.threshold_rule,
                                    train_config.target_sensitivity)
    return trainer.fit(model, objective,
                       CachedImageDataset(cache, train_indices, transform=augment), CachedImageDataset(cache, val_indices),
                       resume=resume, overwrite=overwrite, record=record,
                       data=digest(describes.provenance))


def finetune(cache_dir: str | Path, run_dir: str | Path, encoder: str | Path, model_config: ModelConfig,
             train_config: TrainConfig, freeze: str = "none", **options: object) -> dict:
    """Train a classifier initialised from ``encoder`` on ``cache_dir``; options as :func:`train_supervised`."""
    if freeze not in FREEZE_POLICIES:
        raise ValueError(f"freeze must be one of {', '.join(FREEZE_POLICIES)}, not {freeze!r}")
    pretrained = load_checkpoint(encoder, EncoderCheckpoint)
    model_config = model_config.model_copy(update={
        "encoder": str(encoder), "backbone": pretrained.encoder.backbone, "in_chans": pretrained.encoder.in_chans,
        "weights": None, "trainable_from": FREEZE_POLICIES[freeze]})
    if not {"mean", "std", "intensity_stats"} & train_config.model_fields_set:  # the encoder's unless set explicitly
        train_config = train_config.model_copy(update=pretrained.normalisation.model_dump())
    return train_supervised(cache_dir, run_dir, model_config, train_config, provenance=pretrained.provenance, **options)
