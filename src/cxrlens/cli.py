"""The ``cxrlens`` command line: thin wrappers that parse options and call the API."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from cxrlens import __version__
from cxrlens.data.cache import DEFAULT_CACHE_SIZE, CacheMismatchError, prepare_cache_with_bar
from cxrlens.data.io import CXRImageError
from cxrlens.data.records import CXRDataset, DatasetFormatError
from cxrlens.data.registry import READERS, SAMPLE_FOLDERS, open_dataset, open_sample
from cxrlens.data.splits import split_by_patient
from cxrlens.paths import find_data_root

app = typer.Typer(help="Chest X-ray classifiers from mostly unlabeled images, with heatmaps and boxes.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Read datasets and prepare the fast image cache.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=True)

DatasetName = Annotated[str, typer.Argument(help=f"Dataset layout: {', '.join(READERS)}; or 'sample' for the sample sets.")]
Roots = Annotated[Optional[list[Path]], typer.Argument(help="Dataset folder(s); with 'sample': sample set names "
                                                        f"({', '.join(SAMPLE_FOLDERS)}), default all.")]
DataRoot = Annotated[Optional[Path], typer.Option("--data-root", help="Sample data root (default $CXRLENS_DATA or ../shared/data).")]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logging.")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False, show_time=False)])


models_app = typer.Typer(help="List the model architectures.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(
    num_classes: Annotated[int, typer.Option(help="Classes of the head.")] = 14,
    in_chans: Annotated[int, typer.Option(help="Input channels (papers' counts use 3).")] = 1,
) -> None:
    """Print every architecture with its parameter count (paper 003 Table 4 beside it)."""
    from cxrlens.config import ModelConfig
    from cxrlens.models import BACKBONES, build_model, count_parameters

    paper = {("standard", "resnet50"): "23,536,718", ("multires", "resnet50"): "26,273,615",
             ("standard", "efficientnet_b4"): "17,573,718", ("multires", "efficientnet_b4"): "18,913,543"}
    rows = [("standard", name, "gap") for name in BACKBONES]
    rows += [("multires", "resnet50", "lse"), ("multires", "efficientnet_b4", "lse"),
             ("dense-multires", "resnet50", "lse-lba")]
    table = Table(title=f"architectures ({num_classes} classes, {in_chans}-channel input)")
    for column in ("arch", "backbone", "pooling", "parameters", "paper 003 Table 4 (3-ch)"):
        table.add_column(column, justify="right" if column[0] in "pP" else "left")
    for arch, backbone, pooling in rows:
        model = build_model(ModelConfig(arch=arch, backbone=backbone, pooling=pooling, num_classes=num_classes,
                                        in_chans=in_chans))
        table.add_row(arch, backbone, pooling, f"{count_parameters(model):,}", paper.get((arch, backbone), ""))
    Console().print(table)


@app.command("train-supervised")
def train_supervised_command(
    cache: Annotated[Path, typer.Option(help="Prepared cache folder (cxrlens data prepare).")],
    run: Annotated[Path, typer.Option(help="Run folder for config, metrics and checkpoints.")],
    config: Annotated[Optional[Path], typer.Option(help="YAML with 'model:' and 'train:' sections.")] = None,
    arch: Annotated[Optional[str], typer.Option(help="standard | multires | dense-multires")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="resnet18/34/50/101, wide_resnet50_2, densenet121, efficientnet_b4")] = None,
    pooling: Annotated[Optional[str], typer.Option(help="gap | lse | lse-lba")] = None,
    weights: Annotated[Optional[str], typer.Option(help="'imagenet' (download) or a local weights file.")] = None,
    epochs: Annotated[Optional[int], typer.Option()] = None,
    batch_size: Annotated[Optional[int], typer.Option()] = None,
    lr: Annotated[Optional[float], typer.Option()] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu | cuda | auto")] = None,
    devices: Annotated[Optional[int], typer.Option(help="GPUs / processes (DDP when > 1).")] = None,
    precision: Annotated[Optional[str], typer.Option(help="32-true | bf16-mixed (AMP on GPU)")] = None,
    max_steps_per_epoch: Annotated[Optional[int], typer.Option(help="Cap steps per epoch (smoke runs).")] = None,
    label_fraction: Annotated[float, typer.Option(help="Fraction of training patients with labels used.")] = 1.0,
    official_splits: Annotated[bool, typer.Option(help="Keep the dataset's official split lists.")] = True,
    resume: Annotated[bool, typer.Option(help="Continue the run in --run from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace the run in --run.")] = False,
) -> None:
    """Train a supervised classifier (the papers' baselines) on a prepared cache."""
    from cxrlens.config import ModelConfig, TrainConfig, load_yaml
    from cxrlens.train.supervised import train_supervised

    with cli_errors():
        sections = load_yaml(config) if config else {}
        model_options = {**sections.get("model", {}), **_given(arch=arch, backbone=backbone, pooling=pooling, weights=weights)}
        train_options = {**sections.get("train", {}), **_given(epochs=epochs, batch_size=batch_size, lr=lr, accelerator=device,
                                                                devices=devices, precision=precision,
                                                                max_steps_per_epoch=max_steps_per_epoch)}
        summary = train_supervised(cache, run, ModelConfig(**model_options), TrainConfig(**train_options),
                                   fraction=label_fraction, use_official_splits=official_splits, resume=resume,
                                   overwrite=overwrite)
    typer.echo(f"best val mean AUROC {summary['best_val_mean_auroc']:.4f} at epoch {summary['best_epoch']}; "
               f"metrics and checkpoints in {run}")


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn the errors a user can cause into one line on stderr and exit status 2."""
    from pydantic import ValidationError

    from cxrlens.models.backbones import WeightsUnavailableError
    from cxrlens.train.checkpoint import CheckpointError
    from cxrlens.train.engine import NonFiniteLossError, RunExistsError

    try:
        yield
    except ValidationError as error:
        _fail("invalid settings: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()))
    except (ValueError, OSError, RunExistsError, NonFiniteLossError, CheckpointError, WeightsUnavailableError,
            CacheMismatchError, RuntimeError) as error:
        _fail(str(error))


def _given(**options: object) -> dict:
    return {key: value for key, value in options.items() if value is not None}


@app.command()
def version() -> None:
    """Print the cxrlens version."""
    typer.echo(__version__)


def _open(dataset: str, roots: list[Path] | None, data_root: Path | None) -> CXRDataset:
    try:
        if dataset == "sample":
            root = find_data_root(data_root)
            if root is None:
                raise FileNotFoundError("no sample data root: pass --data-root or set $CXRLENS_DATA")
            return open_sample(root, [str(name) for name in roots] if roots else list(SAMPLE_FOLDERS))
        return open_dataset(dataset, roots or [])
    except (DatasetFormatError, CXRImageError, FileNotFoundError, ValueError) as error:
        _fail(str(error))


def print_error(message: str) -> None:
    """``error: message`` on stderr as one line (never wrapped; brackets in paths are not markup)."""
    console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True, highlight=False)


def _fail(message: str) -> None:
    print_error(message)
    raise typer.Exit(code=2)


@data_app.command("inspect")
def data_inspect(dataset: DatasetName, roots: Roots = None, data_root: DataRoot = None) -> None:
    """Summarise a dataset: images, patients, splits, labels, boxes and problems found."""
    opened = _open(dataset, roots, data_root)
    splits = split_by_patient(opened.items)
    table = Table(title=f"{opened.name}: {len(opened)} images, "
                        f"{len({item.patient_id for item in opened.items})} patients")
    table.add_column("class")
    table.add_column("positives", justify="right")
    for name, count in opened.positives().items():
        table.add_row(name, str(count))
    Console().print(table)
    typer.echo("splits (patient-level): " + ", ".join(f"{k} {len(v)}" for k, v in splits.as_dict().items()))
    typer.echo(f"boxes: {sum(len(item.boxes) for item in opened.items)} on "
               f"{sum(bool(item.boxes) for item in opened.items)} images")
    for line in opened.problems.summary():
        typer.echo(f"left out: {line}")


@data_app.command("prepare")
def data_prepare(
    dataset: DatasetName,
    roots: Roots = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Cache folder to create or resume.")] = Path("cache/prepared"),
    size: Annotated[int, typer.Option(help="Side of the stored square images (256 default; 512 for paper 004).")] = DEFAULT_CACHE_SIZE,
    fit: Annotated[str, typer.Option(help="squash (resize to square, as the papers) or pad (keep aspect).")] = "squash",
    workers: Annotated[Optional[int], typer.Option(help="Decoding processes (default: all cores).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a cache prepared from other images or settings.")] = False,
    data_root: DataRoot = None,
) -> None:
    """Decode and resize a dataset once into a uint8 cache; re-run to resume after an interrupt."""
    opened = _open(dataset, roots, data_root)
    try:
        cache = prepare_cache_with_bar(opened, out, size=size, fit=fit, workers=workers, overwrite=overwrite,  # type: ignore[arg-type]
                                       console=console)
    except (CacheMismatchError, ValueError) as error:
        _fail(str(error))
    except KeyboardInterrupt:
        console.print(f"interrupted: re-run the same command to finish preparing {out}")
        raise typer.Exit(code=130) from None
    failures = cache.failures()
    typer.echo(f"{len(cache.ready_indices())} of {len(cache)} images ready in {out} ({size} x {size}, {fit})")
    if failures:
        typer.echo(f"{len(failures)} image(s) could not be decoded, listed in {out / 'failures.jsonl'} "
                   f"(first: {failures[0]['path']}: {failures[0]['reason']})")


from cxrlens import cli_evaluate, cli_infer, cli_run, cli_ssl  # noqa: E402, F401 - register their commands
