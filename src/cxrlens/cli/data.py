"""``cxrlens data inspect`` and ``cxrlens data prepare``: read a dataset, build the fast image cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from cxrlens.cli._common import DataRoot, DropShared, SplitsOption, cli_errors, console, given, settings
from cxrlens.config import SplitConfig
from cxrlens.data.cache import DEFAULT_CACHE_SIZE, prepare_cache_with_bar
from cxrlens.data.io import printable
from cxrlens.data.records import CXRDataset
from cxrlens.data.registry import READERS, SAMPLE_FOLDERS, open_dataset, open_sample
from cxrlens.data.roles import draw_splits
from cxrlens.data.splits import count_patients, official_parts, shared_patients
from cxrlens.paths import find_data_root

app = typer.Typer()
data_app = typer.Typer(help="Read datasets and prepare the fast image cache.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DatasetName = Annotated[str, typer.Argument(help=f"Dataset layout: {', '.join(READERS)}; or 'sample' for the sample sets.")]
Roots = Annotated[Optional[list[Path]], typer.Argument(help="Dataset folder(s); with 'sample': sample set names "
                                                        f"({', '.join(SAMPLE_FOLDERS)}), default all.")]


def _open(dataset: str, roots: list[Path] | None, data_root: Path | None) -> CXRDataset:
    with cli_errors():
        if dataset == "sample":
            root = find_data_root(data_root)
            if root is None:
                raise FileNotFoundError("no sample data root: pass --data-root or set $CXRLENS_DATA")
            return open_sample(root, [str(name) for name in roots] if roots else list(SAMPLE_FOLDERS))
        return open_dataset(dataset, roots or [])


@data_app.command("inspect")
def data_inspect(dataset: DatasetName, roots: Roots = None, splits: SplitsOption = None,
                 drop_shared: DropShared = None, data_root: DataRoot = None) -> None:
    """Summarise a dataset: images, patients, labels, boxes, problems found, the official lists' shared patients and
    the splits a training run would draw."""
    opened = _open(dataset, roots, data_root)
    with cli_errors():
        choice = settings(SplitConfig, given(splits=splits, drop_shared=drop_shared), "split")
        drawn = draw_splits(opened.items, choice, choice.val_fraction, choice.test_fraction, seed=0)
    table = Table(title=f"{opened.name}: {len(opened)} images, "
                        f"{len({item.patient for item in opened.items})} patients")
    table.add_column("class")
    table.add_column("positives", justify="right")
    for name, count in opened.positives().items():
        table.add_row(name, str(count))
    Console().print(table)
    Console().print(_shared_table(opened))
    typer.echo(f"splits ({choice.splits}): " + ", ".join(
        f"{name} {len(part)} images / {count_patients(opened.items, part)} patients"
        for name, part in drawn.as_dict().items()) + (f"; left out {len(drawn.dropped)} {drawn.dropped_from} images"
                                                     if len(drawn.dropped) else ""))
    typer.echo(f"boxes: {sum(len(item.boxes) for item in opened.items)} on "
               f"{sum(bool(item.boxes) for item in opened.items)} images")
    for line in opened.problems.summary():
        typer.echo(f"left out: {line}")


def _shared_table(opened: CXRDataset) -> Table:
    """Per pair of the dataset's official lists: the patients in both and their images on each side."""
    table = Table(title="official lists: patients in two lists")
    for column in ("lists", "shared patients", "images in first", "images in second"):
        table.add_column(column, justify="left" if column == "lists" else "right")
    for pair in shared_patients(opened.items, official_parts(opened.items)):
        table.add_row(f"{pair.first} / {pair.second}", str(pair.patients), str(pair.first_images),
                      str(pair.second_images), style="yellow" if pair.patients else None)
    if not table.rows:
        table.add_row("(fewer than two official lists)", "-", "-", "-")
    return table


@data_app.command("prepare")
def data_prepare(
    dataset: DatasetName,
    roots: Roots = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Cache folder to create or resume.")] = Path("cache/prepared"),
    size: Annotated[int, typer.Option(help="Side of the stored square images (256 default; 512 for paper 004).", min=8,
                                        max=4096)] = DEFAULT_CACHE_SIZE,
    fit: Annotated[str, typer.Option(help="squash (resize to square, as the papers), pad (keep aspect) or crop "
                                          "(centre square, as TorchXRayVision).")] = "squash",
    workers: Annotated[Optional[int], typer.Option(help="Decoding processes (default: all cores).", min=1)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a cache prepared from other images or settings.")] = False,
    data_root: DataRoot = None,
) -> None:
    """Decode and resize a dataset once into a uint8 cache; re-run to resume after an interrupt."""
    opened = _open(dataset, roots, data_root)
    try:
        with cli_errors():
            cache = prepare_cache_with_bar(opened, out, size=size, fit=fit, workers=workers,  # type: ignore[arg-type]
                                           overwrite=overwrite, console=console)
    except KeyboardInterrupt:
        console.print(f"interrupted: re-run the same command to finish preparing {out}")
        raise typer.Exit(code=130) from None
    failures = cache.failures()
    typer.echo(f"{len(cache.ready_indices())} of {len(cache)} images ready in {out} ({size} x {size}, {fit})")
    if failures:
        typer.echo(f"{len(failures)} image(s) could not be decoded, listed in {out / 'failures.jsonl'} "
                   f"(first: {printable(failures[0]['path'])}: {printable(failures[0]['reason'])})")
