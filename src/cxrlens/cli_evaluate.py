"""CLI commands that score a trained classifier and show it: ``evaluate`` and ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cxrlens.cli import app, cli_errors, console

BoxRuleName = Annotated[str, typer.Option(help="relative (paper 003: Q x max) | absolute (paper 000: 0..255)")]
Threshold = Annotated[Optional[float], typer.Option(help="Q (default 0.7) or the 0..255 level (default 127).")]

def localization_table(comparison: dict, title: str) -> Table:
    """Model, location prior and their difference with its 95 % CI, for the headline localization metrics."""
    table = Table(title=title)
    for column in ("metric", "model", "location prior", "model - prior [95% CI]"):
        table.add_column(column)
    for name in ("iou", "acc@0.1", "acc@0.5", "fp@0.1", "dice"):
        c = comparison[name]
        table.add_row(name, f"{c['model']['value']:.3f}", f"{c['prior']['value']:.3f}",
                      f"{c['difference']['value']:+.3f} [{c['difference']['low']:+.3f}, {c['difference']['high']:+.3f}]")
    return table


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="Classifier checkpoint (best.ckpt of train-supervised / finetune).")],
    cache: Annotated[Path, typer.Option(help="Prepared cache to evaluate on (boxes, where it has them, are scored).")],
    run: Annotated[Path, typer.Option(help="Folder for metrics.json, predictions.csv, localization, gallery.")],
    split: Annotated[str, typer.Option(help="test | val | train | all (patient-level; official lists kept)")] = "test",
    cam: Annotated[str, typer.Option(help="gradcam (paper 000's choice) | gradcampp | scorecam | cam")] = "gradcam",
    box_rule: BoxRuleName = "relative",
    threshold: Threshold = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95 % CIs.")] = 1000,
    official_splits: Annotated[bool, typer.Option(help="Keep the dataset's official split lists.")] = True,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    gallery: Annotated[int, typer.Option(help="CAM overlays written for the report.")] = 12,
    refine: Annotated[bool, typer.Option(help="Refine the CAMs with the checkpoint's PCM (cxrlens refine).")] = False,
    report: Annotated[bool, typer.Option(help="Also write report.html.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an evaluation already in --run.")] = False,
) -> None:
    """Classification metrics with CIs, and CAM localization vs radiologist boxes next to the location prior."""
    from cxrlens.evaluate.evaluation import evaluate_checkpoint
    from cxrlens.evaluate.localization import BoxRule
    from cxrlens.evaluate.report import write_report

    with cli_errors():
        rule = BoxRule.from_option(box_rule, threshold)
        payload = evaluate_checkpoint(checkpoint, cache, run, split, cam, rule, bootstrap, use_official_splits=official_splits,
                                      device=device, gallery=gallery, refine=refine, overwrite=overwrite)
        page = write_report(run) if report else None
    means = payload["classification_mean"]
    console.print(f"{payload['images']} images: mean AUROC {means['auc']:.3f}, AUPRC {means['auprc']:.3f}, "
                  f"F1 {means['f1']:.3f}")
    localization = payload["localization"]
    if localization:
        console.print(localization_table(localization["comparison"],
                                         f"localization ({localization['boxes']} boxes, {cam})"))
    typer.echo(f"metrics in {run / 'metrics.json'}" + (f"; report {page}" if page else ""))


@app.command("report")
def report_command(
    run: Annotated[Path, typer.Argument(help="Evaluation folder written by cxrlens evaluate.")],
    out: Annotated[Optional[Path], typer.Option(help="HTML file (default RUN/report.html).")] = None,
) -> None:
    """Write a self-contained HTML report: tables, ROC and PR curves (iso-F1), CAM gallery, training curves."""
    from cxrlens.evaluate.report import write_report

    with cli_errors():
        page = write_report(run, out)
    typer.echo(f"wrote {page}")


@app.command()
def refine(
    checkpoint: Annotated[Path, typer.Argument(help="Classifier checkpoint whose CAMs the PCM refines.")],
    cache: Annotated[Path, typer.Option(help="Prepared cache with the classifier's classes (training split used).")],
    run: Annotated[Path, typer.Option(help="Run folder; refined.ckpt = classifier + PCM.")],
    config: Annotated[Optional[Path], typer.Option(help="YAML of RefineConfig fields.")] = None,
    epochs: Annotated[Optional[int], typer.Option()] = None,
    batch_size: Annotated[Optional[int], typer.Option()] = None,
    lr: Annotated[Optional[float], typer.Option(help="Paper 003: 1e-6.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu | cuda | auto")] = None,
    max_steps_per_epoch: Annotated[Optional[int], typer.Option(help="Cap steps per epoch (smoke runs).")] = None,
    official_splits: Annotated[bool, typer.Option(help="Keep the dataset's official split lists.")] = True,
    resume: Annotated[bool, typer.Option(help="Continue the run in --run from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace the run in --run.")] = False,
) -> None:
    """Train a pixel correlation module with SEAM on the frozen classifier (paper 003 eq. 2, 6, 7)."""
    from cxrlens.cli import _given
    from cxrlens.config import RefineConfig, load_yaml
    from cxrlens.train.seam import train_pcm

    with cli_errors():
        options = load_yaml(config) if config else {}
        options["train"] = {**options.get("train", {}), **_given(epochs=epochs, batch_size=batch_size, lr=lr,
                                                                 accelerator=device,
                                                                 max_steps_per_epoch=max_steps_per_epoch)}
        summary = train_pcm(checkpoint, cache, run, RefineConfig(**options), use_official_splits=official_splits,
                            resume=resume, overwrite=overwrite)
    typer.echo(f"PCM trained; classifier + PCM in {summary['refined']} (use evaluate --refine)")
