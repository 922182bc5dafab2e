"""CLI commands for self-supervised pretraining and its downstream evaluation:
``pretrain``, ``finetune``, ``linear-eval``, ``augment`` and ``tsne``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cxrlens.cli import _given, app, cli_errors
from cxrlens.config import load_yaml

Caches = Annotated[list[Path], typer.Option("--cache", help="Prepared cache folder(s) (cxrlens data prepare); repeatable.")]
Run = Annotated[Path, typer.Option(help="Run folder for config, metrics and checkpoints.")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="YAML config (see configs/).")]
Device = Annotated[Optional[str], typer.Option("--device", help="cpu | cuda | auto")]


@app.command()
def pretrain(
    cache: Caches,
    run: Run,
    method: Annotated[Optional[str], typer.Option(help="simclr | byol | byol-cam (default from the config: byol-cam)")] = None,
    config: ConfigFile = None,
    backbone: Annotated[Optional[str], typer.Option(help="Encoder backbone, e.g. resnet18, resnet50, wide_resnet50_2.")] = None,
    epochs: Annotated[Optional[int], typer.Option()] = None,
    batch_size: Annotated[Optional[int], typer.Option()] = None,
    lr: Annotated[Optional[float], typer.Option()] = None,
    temperature: Annotated[Optional[float], typer.Option(help="SimCLR NT-Xent temperature (paper 002: 0.5, 001: 0.1).")] = None,
    cam_lambda: Annotated[Optional[float], typer.Option(help="CAM loss weight (paper 000: 2).")] = None,
    boxed_per_batch: Annotated[Optional[int], typer.Option(help="Boxed images guaranteed per batch (byol-cam).")] = None,
    fraction: Annotated[Optional[float], typer.Option(help="Fraction of the unlabeled images used (paper 002).")] = None,
    keep_every: Annotated[Optional[int], typer.Option(help="Keep an epoch snapshot every N epochs (for t-SNE).")] = None,
    device: Device = None,
    devices: Annotated[Optional[int], typer.Option(help="GPUs / processes (DDP when > 1).")] = None,
    precision: Annotated[Optional[str], typer.Option(help="32-true | bf16-mixed (AMP on GPU)")] = None,
    num_workers: Annotated[Optional[int], typer.Option(help="DataLoader workers.")] = None,
    max_steps_per_epoch: Annotated[Optional[int], typer.Option(help="Cap steps per epoch (smoke runs).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --run from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace the run in --run.")] = False,
) -> None:
    """Self-supervised pretraining on unlabeled images: SimCLR (papers 001/002), BYOL, BYOL + CAM loss (paper 000)."""
    from cxrlens.config import PretrainConfig
    from cxrlens.ssl.pretrain import pretrain as run_pretrain

    with cli_errors():
        options = load_yaml(config) if config else {}
        options.update(_given(method=method, temperature=temperature, cam_lambda=cam_lambda,
                              boxed_per_batch=boxed_per_batch, fraction=fraction))
        if backbone:
            options["encoder"] = {**options.get("encoder", {}), "backbone": backbone}
        options["train"] = {**options.get("train", {}), **_given(
            epochs=epochs, batch_size=batch_size, lr=lr, accelerator=device, devices=devices, precision=precision,
            num_workers=num_workers, max_steps_per_epoch=max_steps_per_epoch, keep_every=keep_every)}
        summary = run_pretrain(cache, run, PretrainConfig(**options), resume=resume, overwrite=overwrite)
    last = summary["history"][-1] if summary["history"] else {}
    typer.echo(f"pretraining done (final train loss {last.get('train_loss', float('nan')):.4f}); "
               f"encoder in {summary['encoder']}")


@app.command()
def finetune(
    encoder: Annotated[Path, typer.Option(help="encoder.ckpt (or a checkpoint) of a cxrlens pretrain run.")],
    cache: Annotated[Path, typer.Option(help="Prepared cache of the labelled set.")],
    run: Run,
    config: Annotated[Optional[Path], typer.Option(help="YAML with 'model:' and 'train:' sections.")] = None,
    head: Annotated[Optional[str], typer.Option(help="linear (paper 000) | mlp (paper 001: two FC + dropout)")] = None,
    freeze: Annotated[str, typer.Option(help="none | last-blocks | all (head only)")] = "none",
    epochs: Annotated[Optional[int], typer.Option()] = None,
    batch_size: Annotated[Optional[int], typer.Option()] = None,
    lr: Annotated[Optional[float], typer.Option()] = None,
    loss: Annotated[Optional[str], typer.Option(help="weighted-bce (paper 000) | bce | dynamic-bce | soft-margin")] = None,
    label_fraction: Annotated[float, typer.Option(help="Fraction of training patients with labels used.")] = 1.0,
    official_splits: Annotated[bool, typer.Option(help="Keep the dataset's official split lists.")] = True,
    device: Device = None,
    max_steps_per_epoch: Annotated[Optional[int], typer.Option(help="Cap steps per epoch (smoke runs).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --run from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace the run in --run.")] = False,
) -> None:
    """Fine-tune a pretrained encoder with labels (paper 000 multi-label, paper 001 binary)."""
    from cxrlens.config import ModelConfig, TrainConfig
    from cxrlens.train.finetune import finetune as run_finetune

    with cli_errors():
        sections = load_yaml(config) if config else {}
        model_options = {**sections.get("model", {}), **_given(head=head)}
        train_options = {**sections.get("train", {}), **_given(epochs=epochs, batch_size=batch_size, lr=lr, loss=loss,
                                                                accelerator=device,
                                                                max_steps_per_epoch=max_steps_per_epoch)}
        summary = run_finetune(cache, run, encoder, ModelConfig(**model_options), TrainConfig(**train_options),
                               freeze=freeze, fraction=label_fraction, use_official_splits=official_splits,
                               resume=resume, overwrite=overwrite)
    typer.echo(f"best val mean AUROC {summary['best_val_mean_auroc']:.4f} at epoch {summary['best_epoch']}; "
               f"metrics and checkpoints in {run}")


@app.command("linear-eval")
def linear_eval(
    cache: Annotated[Path, typer.Option(help="Prepared cache of the labelled set.")],
    run: Run,
    encoder: Annotated[Optional[Path], typer.Option(help="encoder.ckpt of a pretrain run (omit with --random-init).")] = None,
    random_init: Annotated[Optional[str], typer.Option(help="Score a random-init backbone instead (a baseline).")] = None,
    config: ConfigFile = None,
    fractions: Annotated[Optional[str], typer.Option(help="Label fractions, comma-separated (paper 002: 0.01,0.1,1).")] = None,
    bootstrap: Annotated[Optional[int], typer.Option(help="Bootstrap resamples for the CIs.")] = None,
    folds: Annotated[Optional[int], typer.Option(help="Stratified folds of the C grid search (default 5).")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    overwrite: Annotated[bool, typer.Option(help="Replace metrics already in --run.")] = False,
) -> None:
    """Frozen features -> logistic regression (paper 002) at several label fractions, with bootstrap CIs."""
    from rich.table import Table

    from cxrlens.cli import console
    from cxrlens.config import LinearEvalConfig
    from cxrlens.evaluate.linear_probe import run_linear_eval

    with cli_errors():
        if (encoder is None) == (random_init is None):
            raise ValueError("give exactly one of --encoder and --random-init")
        options = load_yaml(config) if config else {}
        if fractions:
            options["fractions"] = [float(part) for part in fractions.split(",")]
        options.update(_given(bootstrap=bootstrap, folds=folds))
        payload = run_linear_eval(cache, run, encoder, LinearEvalConfig(**options), backbone=random_init or "resnet50",
                                  device=device, overwrite=overwrite)
    table = Table(title=f"linear evaluation: {payload['encoder']}")
    for column in ("fraction", "class", "AUC [95% CI]", "ACC", "SEN", "SPE", "F1"):
        table.add_column(column)
    for fraction, per_class in payload["results"].items():
        for name, entry in per_class.items():
            if "skipped" in entry:
                table.add_row(fraction, name, f"skipped: {entry['skipped']}", "", "", "", "")
                continue
            auc = entry["auc"]
            table.add_row(fraction, name, f"{auc['value']:.3f} [{auc['low']:.3f}, {auc['high']:.3f}]",
                          *(f"{entry[m]['value']:.3f}" for m in ("acc", "sen", "spe", "f1")))
    console.print(table)
    typer.echo(f"metrics in {run / 'metrics.json'} and {run / 'metrics.csv'}")


@app.command()
def augment(
    cache: Annotated[Path, typer.Option(help="Prepared cache to draw images from.")],
    show: Annotated[Path, typer.Option(help="PNG grid to write.")],
    config: Annotated[Optional[Path], typer.Option(help="Pretraining YAML whose online_view/target_view to show.")] = None,
    images: Annotated[int, typer.Option(help="Rows (images) in the grid.")] = 4,
    repeats: Annotated[int, typer.Option(help="Draws of each view per image.")] = 4,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write a PNG grid: each row an image, then draws of the online and the target view augmentation."""
    import numpy as np
    import torch

    from cxrlens.config import PretrainConfig
    from cxrlens.data.cache import PreparedCache
    from cxrlens.ssl.augment import preview_grid, view_transform

    with cli_errors():
        settings = PretrainConfig(**(load_yaml(config) if config else {}))
        prepared = PreparedCache(cache)
        ready = prepared.ready_indices()
        chosen = np.random.default_rng(seed).choice(ready, size=min(images, len(ready)), replace=False)
        tiles = [torch.from_numpy(np.array(prepared.images[int(i)]))[None] for i in chosen]
        transforms = {"online": view_transform(settings.online_view, prepared.size),
                      "target": view_transform(settings.target_view, prepared.size)}
        path = preview_grid(tiles, transforms, show, repeats, seed)
    typer.echo(f"wrote {path}: per row the original, {repeats} online views, {repeats} target views")


@app.command()
def tsne(
    checkpoints: Annotated[list[Path], typer.Argument(help="Pretraining checkpoints (encoder.ckpt, epoch-NNNN.ckpt).")],
    cache: Annotated[Path, typer.Option(help="Prepared cache of a labelled set (colours: its first class).")],
    out: Annotated[Path, typer.Option(help="PNG to write.")],
    max_images: Annotated[int, typer.Option(help="Images drawn from the cache.")] = 600,
    column: Annotated[int, typer.Option(help="Label column that colours the points.")] = 0,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """t-SNE of encoder features for chosen checkpoints, one panel each (paper 002 Fig. 3)."""
    import numpy as np

    from cxrlens.config import LinearEvalConfig
    from cxrlens.data.cache import PreparedCache
    from cxrlens.evaluate.linear_probe import extract_features
    from cxrlens.evaluate.tsne import tsne_figure
    from cxrlens.models.pretrained import build_encoder

    with cli_errors():
        prepared = PreparedCache(cache)
        ready = prepared.ready_indices()
        chosen = np.sort(np.random.default_rng(seed).choice(ready, size=min(max_images, len(ready)), replace=False))
        settings = LinearEvalConfig(seed=seed)
        panels = {path.name if path.name != "encoder.ckpt" else path.parent.name: extract_features(
            build_encoder(path), prepared, chosen, settings) for path in checkpoints}
        groups = prepared.labels[chosen, column].astype(int)
        name = prepared.classes[column]
        path = tsne_figure(panels, groups, [f"no {name}", name], out, seed)
    typer.echo(json.dumps({"tsne": str(path), "images": int(len(chosen))}))
