"""Commands that train: ``train-supervised``, ``finetune``, ``refine`` (PCM with SEAM), ``pretrain``
(SimCLR, BYOL, BYOL + CAM loss) and ``augment`` (a picture of pretraining's views)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, get_args

import typer

from cxrlens.cli._common import (DEVICE, ArchName, BackboneName, BatchSize, ConfigFile, Device, DropShared, Epochs,
                                 LabelFraction, SplitsOption,
                                 LearningRate, MaxSteps, Overwrite, Precision, Processes, Resume,
                                 RunFolderOption, TrackLogger, ValFraction, accelerator, cli_errors, config_sections,
                                 refuse_existing, settings, with_flags)
from cxrlens.config import ModelConfig, PretrainConfig, RefineConfig, SplitConfig, TrainConfig

ViewsOn = Literal[get_args(PretrainConfig.model_fields["views_on"].annotation)]

app = typer.Typer()

Cache = Annotated[Path, typer.Option(help="Prepared cache folder (cxrlens data prepare).")]


def _best(summary: dict, run: Path) -> str:
    return (f"best val mean AUROC {summary['best_val_mean_auroc']:.4f} at epoch {summary['best_epoch']}; "
            f"metrics and checkpoints in {run}")


@app.command("train-supervised")
def train_supervised_command(
    cache: Cache,
    run: RunFolderOption,
    config: Annotated[Optional[Path], typer.Option(help="YAML with 'model:' and 'train:' sections.")] = None,
    arch: ArchName = None,
    backbone: BackboneName = None,
    pooling: Annotated[Optional[str], typer.Option(help="gap | lse | lse-lba")] = None,
    weights: Annotated[Optional[str], typer.Option(help="'imagenet' (download) or a local weights file.")] = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    device: Device = DEVICE,
    devices: Processes = None,
    precision: Precision = None,
    max_steps_per_epoch: MaxSteps = None,
    logger: TrackLogger = None,
    label_fraction: LabelFraction = 1.0,
    splits: SplitsOption = None,
    drop_shared: DropShared = None,
    val_fraction: ValFraction = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Train a supervised classifier (the papers' baselines) on a prepared cache."""
    from cxrlens.train.supervised import train_supervised

    with cli_errors():
        sections = config_sections(config, ("model", "train", "split"), run)
        model = settings(ModelConfig, with_flags(sections.get("model"), arch=arch, backbone=backbone, pooling=pooling,
                                                 weights=weights), "model")
        train = settings(TrainConfig, with_flags(sections.get("train"), epochs=epochs, batch_size=batch_size, lr=lr,
                                                 accelerator=accelerator(device), devices=devices, precision=precision,
                                                 max_steps_per_epoch=max_steps_per_epoch, logger=logger), "train")
        split = settings(SplitConfig, with_flags(sections.get("split"), splits=splits, drop_shared=drop_shared,
                                                 val_fraction=val_fraction), "split")
        summary = train_supervised(cache, run, model, train, fraction=label_fraction, split=split, resume=resume,
                                   overwrite=overwrite)
    typer.echo(_best(summary, run))


@app.command()
def finetune(
    encoder: Annotated[Path, typer.Option(help="encoder.ckpt (or an epoch snapshot) of a cxrlens pretrain run.")],
    cache: Annotated[Path, typer.Option(help="Prepared cache of the labelled set.")],
    run: RunFolderOption,
    config: Annotated[Optional[Path], typer.Option(help="YAML with 'model:' and 'train:' sections.")] = None,
    head: Annotated[Optional[str], typer.Option(help="linear (paper 000) | mlp (paper 001: two FC + dropout)")] = None,
    freeze: Annotated[str, typer.Option(help="none | last-blocks | all (head only)")] = "none",
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    loss: Annotated[Optional[str], typer.Option(help="weighted-bce (paper 000) | bce | dynamic-bce | soft-margin")] = None,
    label_fraction: LabelFraction = 1.0,
    splits: SplitsOption = None,
    drop_shared: DropShared = None,
    val_fraction: ValFraction = None,
    device: Device = DEVICE,
    max_steps_per_epoch: MaxSteps = None,
    logger: TrackLogger = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Fine-tune a pretrained encoder with labels (paper 000 multi-label, paper 001 binary)."""
    from cxrlens.train.supervised import finetune as run_finetune

    with cli_errors():
        sections = config_sections(config, ("model", "train", "split"), run)
        model = settings(ModelConfig, with_flags(sections.get("model"), head=head), "model")
        train = settings(TrainConfig, with_flags(sections.get("train"), epochs=epochs, batch_size=batch_size, lr=lr,
                                                 loss=loss, accelerator=accelerator(device),
                                                 max_steps_per_epoch=max_steps_per_epoch, logger=logger), "train")
        split = settings(SplitConfig, with_flags(sections.get("split"), splits=splits, drop_shared=drop_shared,
                                                 val_fraction=val_fraction), "split")
        summary = run_finetune(cache, run, encoder, model, train, freeze=freeze, fraction=label_fraction, split=split,
                               resume=resume, overwrite=overwrite)
    typer.echo(_best(summary, run))


@app.command()
def refine(
    checkpoint: Annotated[Path, typer.Argument(help="Classifier checkpoint whose CAMs the PCM refines.")],
    cache: Annotated[Path, typer.Option(help="Prepared cache with the classifier's classes (training split used).")],
    run: RunFolderOption,
    config: Annotated[Optional[Path], typer.Option(help="YAML of RefineConfig fields.")] = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate (paper 003: 1e-6).", min=0)] = None,
    device: Device = DEVICE,
    max_steps_per_epoch: MaxSteps = None,
    logger: TrackLogger = None,
    splits: SplitsOption = None,
    drop_shared: DropShared = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Train a pixel correlation module with SEAM on the frozen classifier (paper 003 eq. 2, 6, 7)."""
    from cxrlens.train.seam import train_pcm

    with cli_errors():
        options = config_sections(config, output=run)
        options["train"] = with_flags(options.get("train"), epochs=epochs, batch_size=batch_size, lr=lr,
                                      accelerator=accelerator(device), max_steps_per_epoch=max_steps_per_epoch,
                                      logger=logger)
        split = settings(SplitConfig, with_flags({}, splits=splits, drop_shared=drop_shared), "split")
        summary = train_pcm(checkpoint, cache, run, settings(RefineConfig, options), split=split, resume=resume,
                            overwrite=overwrite)
    typer.echo(f"PCM trained; classifier + PCM in {summary['refined']} (use evaluate --refine)")


@app.command()
def pretrain(
    cache: Annotated[list[Path], typer.Option("--cache", help="Prepared cache folder(s); repeatable.")],
    run: RunFolderOption,
    method: Annotated[Optional[str], typer.Option(help="simclr | byol | byol-cam (default from the config: byol-cam)")] = None,
    config: ConfigFile = None,
    backbone: BackboneName = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    temperature: Annotated[Optional[float], typer.Option(help="SimCLR NT-Xent temperature (paper 002: 0.5, 001: 0.1).", min=0)] = None,
    cam_lambda: Annotated[Optional[float], typer.Option(help="CAM loss weight (paper 000: 2).", min=0)] = None,
    boxed_per_batch: Annotated[Optional[int], typer.Option(help="Boxed images guaranteed per batch (byol-cam).", min=0)] = None,
    fraction: Annotated[Optional[float], typer.Option(help="Fraction of the unlabeled images used (paper 002).", min=0,
                                                          max=1)] = None,
    keep_epoch: Annotated[Optional[list[int]], typer.Option(help="Keep an encoder snapshot after this epoch (repeat; "
                                                            "paper 002: 10, 25, 50, 100 for t-SNE).", min=1)] = None,
    splits: SplitsOption = None,
    drop_shared: DropShared = None,
    device: Device = DEVICE,
    devices: Processes = None,
    precision: Precision = None,
    num_workers: Annotated[Optional[int], typer.Option(help="DataLoader workers.", min=0)] = None,
    views_on: Annotated[Optional[ViewsOn], typer.Option(
        help="Where the two views are drawn: workers (DataLoader, one CPU core each) or device (whole batches on "
             "the training device, kornia).")] = None,
    max_steps_per_epoch: MaxSteps = None,
    logger: TrackLogger = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Self-supervised pretraining on unlabeled images: SimCLR (papers 001/002), BYOL, BYOL + CAM loss (paper 000)."""
    from cxrlens.ssl import pretrain as run_pretrain

    with cli_errors():
        options = config_sections(config, output=run)
        method_options = options.get("method", {})
        method_options = {"name": method_options} if isinstance(method_options, str) else dict(method_options)
        if method and method != method_options.get("name"):
            method_options = {"name": method}  # another method than the config's: its own defaults
        method_options.setdefault("name", PretrainConfig().method.name)
        options["method"] = with_flags(method_options, temperature=temperature, cam_lambda=cam_lambda,
                                       boxed_per_batch=boxed_per_batch)
        options.update(with_flags({}, fraction=fraction, splits=splits, drop_shared=drop_shared, views_on=views_on))
        options["encoder"] = with_flags(options.get("encoder"), backbone=backbone)
        options["train"] = with_flags(options.get("train"), epochs=epochs, batch_size=batch_size, lr=lr,
                                      accelerator=accelerator(device), devices=devices, precision=precision,
                                      num_workers=num_workers, max_steps_per_epoch=max_steps_per_epoch,
                                      keep_epochs=tuple(keep_epoch) if keep_epoch else None, logger=logger)
        summary = run_pretrain(cache, run, settings(PretrainConfig, options), resume=resume, overwrite=overwrite)
    last = summary["history"][-1] if summary["history"] else {}
    typer.echo(f"pretraining done (final train loss {last.get('train_loss', float('nan')):.4f}); "
               f"encoder in {summary['encoder']}")


@app.command()
def augment(
    cache: Annotated[Path, typer.Option(help="Prepared cache to draw images from.")],
    show: Annotated[Path, typer.Option(help="PNG grid to write.")],
    config: Annotated[Optional[Path], typer.Option(help="Pretraining YAML whose online_view/target_view to show.")] = None,
    images: Annotated[int, typer.Option(help="Rows (images) in the grid.", min=1)] = 4,
    repeats: Annotated[int, typer.Option(help="Draws of each view per image.", min=1)] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the image draw and the views.", min=0)] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace --show if it exists.")] = False,
) -> None:
    """Write a PNG grid: each row an image, then draws of the online and the target view augmentation."""
    import numpy as np
    import torch

    from cxrlens.data.cache import PreparedCache
    from cxrlens.ssl.augment import preview_grid, view_transform

    with cli_errors():
        refuse_existing(show, overwrite)
        views = settings(PretrainConfig, config_sections(config))
        prepared = PreparedCache(cache)
        ready = prepared.ready_indices()
        chosen = np.random.default_rng(seed).choice(ready, size=min(images, len(ready)), replace=False)
        tiles = [torch.from_numpy(np.array(prepared.images[int(i)]))[None] for i in chosen]
        transforms = {"online": view_transform(views.online_view, prepared.size),
                      "target": view_transform(views.target_view, prepared.size)}
        path = preview_grid(tiles, transforms, show, repeats, seed)
    typer.echo(f"wrote {path}: per row the original, {repeats} online views, {repeats} target views")
