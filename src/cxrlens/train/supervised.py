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

from pathlib import Path


from cxrlens.checkpoints import ClassifierCheckpoint, DataProvenance, EncoderCheckpoint, load_checkpoint
from cxrlens.config import InputSpec, ModelConfig, SplitConfig, TrainConfig
from cxrlens.data.cache import PreparedCache
from cxrlens.data.preprocess import pixel_statistics
from cxrlens.data.provenance import data_provenance, digest
from cxrlens.data.roles import training_roles, with_cam_loss
from cxrlens.data.torch_datasets import CachedImageDataset
from cxrlens.data.transforms import supervised_augmentation
from cxrlens.models import build_model
from cxrlens.models.xrv import XRV_NORMALISATION, published_model
from cxrlens.train.boxed_batches import BoxedBatchSampler
from cxrlens.train.feature_statistics import record_feature_statistics
from cxrlens.train.losses import positive_weights
from cxrlens.train.objectives import SupervisedObjective, make_loss
from cxrlens.train.run_folder import RunFolder
from cxrlens.train.trainer import Trainer, launch

FREEZE_POLICIES: dict[str, int] = {"none": 0, "last-blocks": 3, "all": 5}


def train_supervised(cache_dir: str | Path, run_dir: str | Path, model_config: ModelConfig, train_config: TrainConfig,
                     fraction: float = 1.0, split: SplitConfig = SplitConfig(), resume: bool = False,
                     overwrite: bool = False, show_progress: bool = True) -> dict:
    """Train a classifier on ``cache_dir``'s training split; returns the trainer's summary.

    A model that starts from other weights (``model_config.init``) normalises images as they were trained (unless
    the train config sets ``mean`` / ``std``), and its checkpoints record what those weights saw before: the images
    of a cxrlens checkpoint, or who trained TorchXRayVision or timm weights (``origin``).
    """
    train_config, provenance, origin = _starting_point(model_config, train_config)
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
    cam = train_config.cam_loss
    train_set = CachedImageDataset(cache, train_indices, supervised_augmentation(train_config.augment, cache.size),
                                   box_findings=cache.classes if cam else ())
    if cam and not train_set.boxed.any():
        raise ValueError(f"{cache_dir}: the CAM loss needs boxed training images and its training split has none")
    if cam:
        roles = with_cam_loss(roles, cache.items(), cache.classes)
    describes = ClassifierCheckpoint(
        state={}, network=model_config, classes=list(cache.classes), input=InputSpec(size=cache.size, fit=cache.fit),
        normalisation=train_config.normalisation, origin=origin,
        provenance=[*provenance, data_provenance(cache, roles, recorded)])
    fabric = launch(train_config)
    model = build_model(model_config, cache.classes)
    pos_weight = positive_weights(cache.labels[train_indices], cache.masks[train_indices])
    record = {"cache": str(cache_dir), "label_fraction": fraction, "split": split.model_dump(),
              "classes": list(cache.classes), "train_images": len(train_indices), "val_images": len(val_indices),
              "model": model_config.model_dump(mode="json"), "train": train_config.model_dump(mode="json")}
    inputs = [cache_dir, *([model_config.init] if model_config.init_kind == "file" else [])]
    trainer = Trainer(train_config, RunFolder(run_dir, inputs), fabric, show_progress=show_progress)
    objective = SupervisedObjective(make_loss(train_config, pos_weight), describes, train_config.threshold_rule,
                                    train_config.target_sensitivity, cam)
    batch_sampler = None
    if cam and cam.boxed_per_batch:
        batch_sampler = BoxedBatchSampler(train_set.boxed, train_config.batch_size, cam.boxed_per_batch,
                                          train_config.seed, fabric.world_size, fabric.global_rank)
    summary = trainer.fit(model, objective, train_set, CachedImageDataset(cache, val_indices),
                          batch_sampler=batch_sampler, resume=resume, overwrite=overwrite, record=record,
                          data=digest(describes.provenance))
    if fabric.is_global_zero and trainer.run.best.exists():  # what predict and serve warn against
        record_feature_statistics(trainer.run.best, cache, train_indices, val_indices, str(fabric.device),
                                  seed=train_config.seed)
    return summary


def _starting_point(model_config: ModelConfig, train_config: TrainConfig
                    ) -> tuple[TrainConfig, list[DataProvenance], str]:
    """The train config with the ``init`` weights' normalisation (unless it sets its own), the images that trained
    those weights (a cxrlens checkpoint's provenance), and who trained them when cxrlens did not."""
    kind, name = model_config.init_kind, (model_config.init or "").partition(":")[2]
    if kind == "none":
        return train_config, [], ""
    if kind == "timm":
        return train_config, [], f"ImageNet weights of {name} through timm"
    if kind == "xrv":
        normalisation, provenance, origin = XRV_NORMALISATION, [], published_model(name).origin
    else:
        start = load_checkpoint(model_config.init, (EncoderCheckpoint, ClassifierCheckpoint))
        normalisation, provenance = start.normalisation, start.provenance
        origin = start.origin if isinstance(start, ClassifierCheckpoint) else ""
    if not {"mean", "std", "intensity_stats"} & train_config.model_fields_set:
        train_config = train_config.model_copy(update=normalisation.model_dump())
    return train_config, list(provenance), origin


def finetune(cache_dir: str | Path, run_dir: str | Path, encoder: str | Path, model_config: ModelConfig,
             train_config: TrainConfig, freeze: str = "none", **options: object) -> dict:
    """Train a classifier initialised from ``encoder`` on ``cache_dir``; options as :func:`train_supervised`."""
    if freeze not in FREEZE_POLICIES:
        raise ValueError(f"freeze must be one of {', '.join(FREEZE_POLICIES)}, not {freeze!r}")
    pretrained = load_checkpoint(encoder, EncoderCheckpoint)
    model_config = model_config.model_copy(update={
        "init": str(encoder), "backbone": pretrained.encoder.backbone, "in_chans": pretrained.encoder.in_chans,
        "weights": None, "trainable_from": FREEZE_POLICIES[freeze]})
    return train_supervised(cache_dir, run_dir, model_config, train_config, **options)
