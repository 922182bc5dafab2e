"""Commands that score and show models: ``evaluate``, ``linear-eval``, ``compare``, ``report`` and ``tsne``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cxrlens.cli._common import (DEVICE, BoxRuleName, CamMethod, Compile, ConfigFile, Device, DropShared, Floor,
                                 Overwrite, RunFolderOption, SplitsOption, Threshold, TrackLogger, cli_errors,
                                 config_sections, console, given, localization_table, print_overlaps, print_verdict,
                                 refuse_existing, settings)
from cxrlens.config import EvaluateConfig, LinearEvalConfig

app = typer.Typer()


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="Classifier checkpoint (best.ckpt of train-supervised / finetune), "
                                               "or xrv:<name>, a TorchXRayVision model (e.g. xrv:densenet121-res224-nih).")],
    cache: Annotated[Path, typer.Option(help="Prepared cache to evaluate on (boxes, where it has them, are scored).")],
    run: Annotated[Path, typer.Option(help="Folder for metrics.json, predictions.csv, localization, gallery.")],
    split: Annotated[str, typer.Option(help="test | val | train | all (of the splits --splits draws)")] = "test",
    cam: CamMethod = "gradcam",
    box_rule: BoxRuleName = "relative",
    threshold: Threshold = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95 % CIs.", min=0)] = 1000,
    splits: SplitsOption = None,
    drop_shared: DropShared = None,
    box_test_fraction: Annotated[Optional[float], typer.Option(
        help="Paper 000: score only the boxed patients pretraining held out (its box_test_fraction, e.g. 0.2).",
        min=0, max=0.95)] = None,
    allow_train_overlap: Annotated[bool, typer.Option(
        help="Score images or patients the checkpoint trained on (refused otherwise; the report says so in red).")
    ] = False,
    raw_maps: Annotated[bool, typer.Option(
        help="Keep the model's own map values (paper 004's probabilities) instead of min-max scaling each map.")
    ] = False,
    threshold_sweep: Annotated[Optional[str], typer.Option(
        help="Also score boxes at these thresholds, comma-separated (paper 004: 0.1,0.4,0.8).")] = None,
    device: Device = DEVICE,
    compile: Compile = False,
    logger: TrackLogger = None,
    gallery: Annotated[int, typer.Option(help="CAM overlays written for the report.", min=0)] = 12,
    refine: Annotated[bool, typer.Option(help="Refine the CAMs with the checkpoint's PCM (cxrlens refine).")] = False,
    floor: Floor = True,
    report: Annotated[bool, typer.Option(help="Also write report.html.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an evaluation already in --run.")] = False,
    weights_file: Annotated[Optional[Path], typer.Option(
        help="For xrv:<name>: its weights file, where it is not in TorchXRayVision's cache folder (offline).")] = None,
) -> None:
    """Classification metrics with CIs, and CAM localization vs radiologist boxes next to the location prior."""
    from cxrlens.evaluate import evaluate as run_evaluation
    from cxrlens.evaluate.evaluator import headline_metrics
    from cxrlens.evaluate.model_card import CARD_NAME
    from cxrlens.evaluate.report import write_report
    from cxrlens.tracking import Tracker

    with cli_errors():
        sweep = [float(part) for part in threshold_sweep.split(",")] if threshold_sweep else []
        evaluation = settings(EvaluateConfig, {
            "split": split, "cam": cam, "box_rule": box_rule, "threshold": threshold, "bootstrap": bootstrap,
            **given(splits=splits, drop_shared=drop_shared, box_test_fraction=box_test_fraction), "gallery": gallery,
            "refine": refine, "floor": floor, "allow_train_overlap": allow_train_overlap, "normalize_maps": not raw_maps,
            "threshold_sweep": sweep})
        tracker = Tracker(logger or "auto", run)  # a logger that is not installed fails before any work
        payload = run_evaluation(checkpoint, cache, run, evaluation, device=device, overwrite=overwrite,
                                 weights_file=weights_file, compile=compile)
        page = write_report(run) if report else None
        tracker.hyperparameters({"checkpoint": str(checkpoint), "cache": str(cache), **evaluation.model_dump(mode="json")})
        tracker.metrics(headline_metrics(payload), 0)
        tracker.artifacts([run / "metrics.json", run / "report.html", run / CARD_NAME])
        tracker.close()
    means = payload["classification_mean"]
    console.print(f"{payload['images']} images: mean AUROC {means['auc']:.3f}, AUPRC {means['auprc']:.3f}, "
                  f"F1 {means['f1']:.3f}")
    print_verdict(payload["verdict"])
    print_overlaps(payload["data_overlap"])
    if payload["origin"]:
        console.print(f"[yellow]weights not trained by cxrlens: {payload['origin']}[/yellow]")
    unscored = payload["unscored"]
    if unscored["model_only"] or unscored["data_only"]:
        console.print(f"not scored: model-only {', '.join(unscored['model_only']) or '-'}; "
                      f"data-only {', '.join(unscored['data_only']) or '-'}")
    localization = payload["localization"]
    if localization:
        console.print(localization_table(localization["comparison"],
                                         f"localization ({localization['boxes']} boxes, {payload['cam']})"))
    console.print("seconds: " + ", ".join(f"{stage} {value:.1f}" for stage, value in payload["seconds"].items()),
                  style="dim")
    typer.echo(f"metrics in {run / 'metrics.json'}" + (f"; report {page}" if page else ""))


@app.command("linear-eval")
def linear_eval(
    cache: Annotated[Path, typer.Option(help="Prepared cache of the labelled set.")],
    run: RunFolderOption,
    encoder: Annotated[Optional[Path], typer.Option(help="encoder.ckpt of a pretrain run (omit with --random-init).")] = None,
    random_init: Annotated[Optional[str], typer.Option(help="Score a random-init backbone instead (a baseline).")] = None,
    config: ConfigFile = None,
    fractions: Annotated[Optional[str], typer.Option(
        help="Label fractions, comma-separated, e.g. 0.01,0.1,1 (default 1: all labels, as paper 002).")] = None,
    bootstrap: Annotated[Optional[int], typer.Option(help="Bootstrap resamples for the CIs.", min=0)] = None,
    folds: Annotated[Optional[int], typer.Option(help="Stratified folds of the C grid search (default 5).", min=2)] = None,
    splits: SplitsOption = None,
    drop_shared: DropShared = None,
    floor: Floor = True,
    allow_train_overlap: Annotated[bool, typer.Option(
        help="Score test images whose boxes trained the encoder's CAM loss (refused otherwise).")] = False,
    by_epoch: Annotated[bool, typer.Option(help="Also probe the encoder's kept snapshots: accuracy per pretraining "
                                           "epoch and t-SNE (paper 002 Figs. 2-3).")] = False,
    gradcam_images: Annotated[Optional[int], typer.Option(help="Grad-CAM through the probe of this many positive test "
                                                          "images it calls positive (paper 002 Fig. 4: 6).", min=0)] = None,
    device: Device = DEVICE,
    overwrite: Overwrite = False,
) -> None:
    """Frozen features -> logistic regression (paper 002) at several label fractions, with bootstrap CIs."""
    from cxrlens.evaluate.linear_probe import run_linear_eval

    with cli_errors():
        if (encoder is None) == (random_init is None):
            raise ValueError("give exactly one of --encoder and --random-init")
        options = config_sections(config, output=run)
        if fractions:
            options["fractions"] = [float(part) for part in fractions.split(",")]
        options.update(given(bootstrap=bootstrap, folds=folds, splits=splits, drop_shared=drop_shared,
                             gradcam_images=gradcam_images))
        if by_epoch:
            options["by_epoch"] = True
        if allow_train_overlap:
            options["allow_train_overlap"] = True
        if not floor:
            options["floor"] = False
        payload = run_linear_eval(cache, run, encoder, settings(LinearEvalConfig, options), backbone=random_init or "resnet50",
                                  device=device, overwrite=overwrite)
    print_overlaps(payload["data_overlap"])
    print_verdict(payload["verdict"])
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


@app.command("compare")
def compare_command(
    model: Annotated[Path, typer.Argument(help="Evaluation folder of the method the claim is about.")],
    baseline: Annotated[Path, typer.Argument(help="Evaluation folder of what it is compared with (same images).")],
    claim: Annotated[str, typer.Option(help="What is claimed, e.g. 'CAM loss > no CAM loss'.")] = "model > baseline",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the paired 95 % CIs.", min=0)] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.", min=0)] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Also write the comparison as JSON here.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the --out file if it exists.")] = False,
) -> None:
    """Two evaluations of the same images, paired: mean AUROC, heatmap IoU and acc@0.5, model - baseline with 95 % CIs
    resampling whole patients, as verdict lines."""
    from cxrlens.evaluate.comparison import compare_evaluations, evaluated_cache

    with cli_errors():
        if out is not None:
            refuse_existing(out, overwrite)
        payload = compare_evaluations(model, baseline, evaluated_cache(model, baseline), claim, bootstrap, seed)
        if out is not None:
            out.write_text(json.dumps(payload, indent=2))
    typer.echo(f"{payload['images']} images, {len(payload['findings'])} findings scored by both")
    print_verdict(payload["verdict"])


@app.command("report")
def report_command(
    run: Annotated[Path, typer.Argument(help="Evaluation folder written by cxrlens evaluate.")],
    out: Annotated[Optional[Path], typer.Option(help="HTML file (default RUN/report.html, replaced each time).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the --out file if it exists.")] = False,
) -> None:
    """Write a self-contained HTML report: tables, ROC and PR curves (iso-F1), CAM gallery, training curves."""
    from cxrlens.evaluate.report import write_report

    with cli_errors():
        if out is not None:
            refuse_existing(out, overwrite)
        page = write_report(run, out)
    typer.echo(f"wrote {page}")


@app.command()
def card(
    checkpoint: Annotated[str, typer.Argument(help="Classifier checkpoint (best.ckpt, refined.ckpt) or xrv:<name>.")],
    evaluation: Annotated[Optional[list[Path]], typer.Option(
        help="Evaluation folder of cxrlens evaluate whose results the card reports (repeatable).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Markdown file (default: CKPT with .card.md).")] = None,
    weights_file: Annotated[Optional[Path], typer.Option(help="For xrv:<name>: its weights file.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the --out file if it exists.")] = False,
) -> None:
    """Write a Hugging Face-style model card: architecture, data provenance, training settings, metrics with CIs
    beside the raw-pixel floor, operating thresholds, intended use and limitations."""
    from cxrlens.evaluate.model_card import Evaluation, default_card_path, write_model_card
    from cxrlens.paths import refuse_overlap

    with cli_errors():
        if out is None and checkpoint.startswith("xrv:"):
            raise ValueError(f"{checkpoint}: give --out for the card of a TorchXRayVision model")
        out = out if out is not None else default_card_path(checkpoint)
        refuse_existing(out, overwrite)
        if not checkpoint.startswith("xrv:"):
            refuse_overlap(out, [checkpoint], "card")
        evaluations = [Evaluation.read(folder) for folder in evaluation or []]
        written = write_model_card(checkpoint, out, evaluations, weights_file)
    typer.echo(f"wrote {written}")


@app.command()
def tsne(
    checkpoints: Annotated[list[Path], typer.Argument(help="Pretraining checkpoints (encoder.ckpt, epoch-NNNN.ckpt).")],
    cache: Annotated[Path, typer.Option(help="Prepared cache of a labelled set (colours: its first class).")],
    out: Annotated[Path, typer.Option(help="PNG to write.")],
    max_images: Annotated[int, typer.Option(help="Images drawn from the cache.", min=2)] = 600,
    column: Annotated[int, typer.Option(help="Label column that colours the points.", min=0)] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the image draw and the embedding.", min=0)] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
) -> None:
    """t-SNE of encoder features for chosen checkpoints, one panel each (paper 002 Fig. 3)."""
    import numpy as np

    from cxrlens.data.cache import PreparedCache
    from cxrlens.evaluate.frozen_features import extract_features, frozen_encoder
    from cxrlens.evaluate.tsne import tsne_figure

    with cli_errors():
        refuse_existing(out, overwrite)
        prepared = PreparedCache(cache)
        ready = prepared.ready_indices()
        chosen = np.sort(np.random.default_rng(seed).choice(ready, size=min(max_images, len(ready)), replace=False))
        panels = {path.name if path.name != "encoder.ckpt" else path.parent.name:
                  extract_features(*frozen_encoder(path), prepared, chosen) for path in checkpoints}
        groups = prepared.labels[chosen, column].astype(int)
        name = prepared.classes[column]
        path = tsne_figure(panels, groups, [f"no {name}", name], out, seed)
    typer.echo(json.dumps({"tsne": str(path), "images": int(len(chosen))}))
