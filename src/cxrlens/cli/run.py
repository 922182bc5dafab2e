"""CLI commands that run whole experiments and gather their papers' tables: ``run CONFIG [--smoke | --profile
NAME]``, ``quickstart`` and ``tables RUN_DIR``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from rich.table import Table

from cxrlens.cli._common import DEVICE, DataRoot, Device, cli_errors, console, localization_table, print_verdict
from cxrlens.paths import bundled_config

app = typer.Typer()


def _interruptible(run: Callable[[], dict]) -> dict:
    try:
        return run()
    except KeyboardInterrupt:
        console.print("interrupted: run the same command again to resume (finished steps and epochs are kept)")
        raise typer.Exit(code=130) from None


def _print_summary(summary: dict, folder: Path) -> None:
    for name, record in summary["steps"].items():
        if record.get("verdict"):
            console.print(f"[bold]{name}[/]: verdict")
            print_verdict(record["verdict"])
        if record["kind"] != "evaluate":
            continue
        means = record["classification_mean"]
        console.print(f"[bold]{name}[/]: mean AUROC {means['auc']:.3f}, AUPRC {means['auprc']:.3f}, F1 {means['f1']:.3f}")
        if record["localization"]:
            console.print(localization_table(record["localization"],
                                             f"{name}: localization vs the image-blind location prior"))
        console.print(f"report: [link=file://{Path(record['report']).resolve()}]{record['report']}[/link]")
    if summary["references"]:
        console.print(f"the paper's tables beside ours: cxrlens tables {folder}, or {folder / 'report.html'}")


def _print_plans(plans: list) -> None:
    """One row per step: what it would use; problems in red, notes in yellow."""
    table = Table(title="experiment check")
    for column in ("step", "kind", "plan", "problems / notes"):
        table.add_column(column)
    for plan in plans:
        remarks = [f"[red]{problem}[/]" for problem in plan.problems] + [f"[yellow]{note}[/]" for note in plan.notes]
        table.add_row(plan.name, plan.kind, plan.summary, "\n".join(remarks) or "ok")
    console.print(table)


@app.command("run")
def run_command(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (configs/), or the name of a bundled one.")],
    smoke: Annotated[bool, typer.Option(help="Run the same graph tiny on the sample data.")] = False,
    profile: Annotated[Optional[str], typer.Option(help="Run at one of the config's profiles, e.g. cpu: the sample "
                                                   "sets on 2 CPU cores in about 30 minutes, with settings that "
                                                   "learn.")] = None,
    check: Annotated[bool, typer.Option(help="Only check the experiment on its datasets' lists (splits, classes, no "
                                        "evaluation on training images); nothing is prepared or trained.")] = False,
    runs: Annotated[Path, typer.Option(help="Folder of experiment runs.")] = Path("runs"),
    cache: Annotated[Path, typer.Option(help="Folder of prepared caches (shared).")] = Path("cache"),
    device: Device = DEVICE,
    data_root: DataRoot = None,
) -> None:
    """Run every step of one paper experiment; re-run to resume (finished steps are skipped)."""
    from cxrlens.experiment import load_experiment, profile_version, smoke_version
    from cxrlens.pipeline import ExperimentCheckError, check_experiment, open_data, run_experiment

    with cli_errors():
        if smoke and profile:
            raise ValueError("--smoke and --profile are two scales of one run; give one")
        path = config if config.exists() else bundled_config(str(config))
        experiment = load_experiment(path)
        if profile:
            experiment = profile_version(experiment, profile, path)
        if smoke:
            experiment = smoke_version(experiment)
        try:
            if check:
                datasets = {key: open_data(spec, data_root) for key, spec in experiment.data.items()}
                _print_plans(check_experiment(experiment, datasets))
                typer.echo(f"{experiment.name}: every step checked, no problem")
                return
            summary = _interruptible(lambda: run_experiment(experiment, runs, cache, data_root, device,
                                                            log=console.print))
        except ExperimentCheckError as error:
            _print_plans(error.plans)
            raise
    _print_summary(summary, runs / experiment.name)
    typer.echo(f"summary in {runs / experiment.name / 'summary.json'}")


@app.command()
def quickstart(
    device: Device = DEVICE,
    runs: Annotated[Path, typer.Option(help="Folder of experiment runs.")] = Path("runs"),
    cache: Annotated[Path, typer.Option(help="Folder of prepared caches.")] = Path("cache"),
    data_root: DataRoot = None,
) -> None:
    """The main job on the real sample X-rays: SimCLR -> linear eval and fine-tuning -> evaluate -> report.html."""
    from cxrlens.experiment import load_experiment
    from cxrlens.pipeline import run_experiment

    with cli_errors():
        experiment = load_experiment(bundled_config("quickstart"))
        summary = _interruptible(lambda: run_experiment(experiment, runs, cache, data_root, device, log=console.print))
    _print_summary(summary, runs / experiment.name)


@app.command()
def tables(
    run_dir: Annotated[Path, typer.Argument(help="An experiment's run folder (runs/<name>).")],
    fmt: Annotated[str, typer.Option("--format", help="md, html, csv or latex.")] = "md",
) -> None:
    """The run's paper's tables and figures in the paper's layout: ours with 95 % CIs beside the paper's numbers and
    the floors, from this run and the runs of the same paper and scale beside it (written to RUN_DIR/tables/)."""
    from cxrlens.tables import write_tables

    with cli_errors():
        text, path = write_tables(run_dir, fmt)
    if fmt == "md":
        typer.echo(text)
    typer.echo(f"written to {path}")
