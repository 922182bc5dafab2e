"""What every command shares: the console, one-line errors, config + flag merging, and option types.

Option types are ``Annotated`` aliases so a knob is declared once: one ``--device`` with
one default, CAM methods and backbones offered from their registries, one box-rule pair,
one pixel cap. The command modules (``cli/data.py``, ``train.py``, ...) import only this
module and library code, never each other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal, NoReturn, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cxrlens.config import Logger, SharedSide, SplitMode, load_yaml, unknown_key
from cxrlens.data.io import DEFAULT_MAX_PIXELS
from cxrlens.devices import DEFAULT_DEVICE, DEVICES
from cxrlens.explain import METHODS
from cxrlens.extras import missing_extra
from cxrlens.models import ARCHITECTURES, BACKBONES
from cxrlens.paths import refuse_overlap

console = Console(stderr=True)
T = TypeVar("T")

Device = Annotated[Literal[DEVICES], typer.Option(
    help="auto: a config file's train.accelerator, else a CUDA GPU when there is one, else the CPU.")]
DEVICE = DEFAULT_DEVICE
TrackLogger = Annotated[Optional[Logger], typer.Option(
    "--logger", help="Experiment tracking: tensorboard (RUN/logs) | mlflow (MLFLOW_TRACKING_URI, else a SQLite store "
    "beside the run) | csv | none; auto (default): TensorBoard when installed.")]
Compile = Annotated[bool, typer.Option(
    help="Run the network through torch.compile with frozen weights: 4-10 s per input shape up front, then about "
         "1.2x faster on CPUs (worth it for thousands of images or a long-running server).")]
CamMethod = Annotated[Literal[METHODS.names()], typer.Option("--cam", help="Heatmap method (paper 000 uses gradcam).")]
BackboneName = Annotated[Optional[Literal[BACKBONES.names()]], typer.Option(help="Backbone (cxrlens models list).")]
ArchName = Annotated[Optional[Literal[ARCHITECTURES.names()]], typer.Option(help="Architecture (cxrlens models list).")]
BoxRuleName = Annotated[Literal["relative", "absolute", "probability"], typer.Option(
    help="relative (paper 003: Q x max) | absolute (paper 000: min-max to 0..255) | probability (paper 004: p >= tau)")]
Threshold = Annotated[Optional[float], typer.Option(help="Q (default 0.7), the 0..255 level (default 127) or tau "
                                                   "(default 0.5).", min=0, max=255)]
MaxPixels = Annotated[int, typer.Option(help="Refuse images with more pixels (decompression bombs).", min=1)]
MAX_PIXELS = DEFAULT_MAX_PIXELS
RunFolderOption = Annotated[Path, typer.Option("--run", help="Run folder for config, metrics and checkpoints.")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="YAML config (see configs/).")]
Epochs = Annotated[Optional[int], typer.Option(help="Training epochs.", min=1)]
BatchSize = Annotated[Optional[int], typer.Option(help="Images per batch and process.", min=1)]
LearningRate = Annotated[Optional[float], typer.Option("--lr", help="Learning rate.", min=0)]
Processes = Annotated[Optional[int], typer.Option("--devices", help="GPUs / processes (DDP when > 1).", min=1)]
Precision = Annotated[Optional[str], typer.Option(help="32-true | bf16-mixed (AMP on GPU)")]
MaxSteps = Annotated[Optional[int], typer.Option(help="Cap steps per epoch (smoke runs).", min=1)]
SplitsOption = Annotated[Optional[SplitMode], typer.Option(
    "--splits", help="official-disjoint (default): the dataset's official lists without the patients they share "
    "(see --drop-shared) | official: the lists as released, shared patients kept and reported | patient: every split "
    "redrawn by patient.")]
DropShared = Annotated[Optional[SharedSide], typer.Option(
    help="official-disjoint: drop the shared patients' images from train (default, the official test set stays "
    "whole) or from test.")]
Floor = Annotated[bool, typer.Option(help="Fit the raw-pixel floor (32 x 32 logistic regression) beside the model; "
                                     "--no-floor only for quick runs.")]
ValFraction = Annotated[Optional[float], typer.Option(
    help="Share of the training patients drawn for validation (default 0.2; paper 004: 0.25).", min=0, max=0.95)]
LabelFraction = Annotated[float, typer.Option(help="Fraction of training patients with labels used.", min=0,
                                                max=1)]
Resume = Annotated[bool, typer.Option(help="Continue the run in --run from its last checkpoint.")]
Overwrite = Annotated[bool, typer.Option(help="Replace what is already in the output folder.")]
DataRoot = Annotated[Optional[Path], typer.Option("--data-root", help="Sample data root (default $CXRLENS_DATA or "
                                                                      "../shared/data).")]


def print_error(message: str) -> None:
    """``error: message`` on stderr as one line (never wrapped; brackets in paths are not markup)."""
    console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True, highlight=False)


class OneLineHandler(logging.Handler):
    """Log records as ``warning: message`` lines on stderr, never wrapped (a line a user can grep and quote)."""

    STYLES = {"WARNING": "bold yellow", "ERROR": "bold red", "CRITICAL": "bold red"}

    def emit(self, record: logging.LogRecord) -> None:
        console.print(Text.assemble((f"{record.levelname.lower()}: ", self.STYLES.get(record.levelname, "dim")),
                                    self.format(record)), soft_wrap=True, highlight=False)


def fail(message: str) -> NoReturn:
    print_error(message)
    raise typer.Exit(code=2)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn the errors a user can cause into one line on stderr and exit status 2."""
    from pydantic import ValidationError

    try:
        yield
    except ModuleNotFoundError as error:  # an optional package: the extra to install, in one line
        message = missing_extra(error)
        if message is None:
            raise
        fail(message)
    except ValidationError as error:
        fail(_invalid(error))
    except (ValueError, OSError, RuntimeError) as error:
        fail(str(error))


def settings(schema: type[T], data: dict, section: str = "") -> T:
    """``schema`` validated from ``data``; errors name the config ``section`` they are in."""
    from pydantic import ValidationError

    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise ValueError(_invalid(error, section)) from None


def _invalid(error: object, section: str = "") -> str:
    """A pydantic ValidationError as one line: ``invalid settings: epochs: ...; train: unknown key ...``."""
    parts = []
    for entry in error.errors():  # a field names itself; a whole-section error (an unknown key) names its section
        where = ".".join(str(part) for part in entry["loc"]) or section
        message = str(entry["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "invalid settings: " + "; ".join(parts)


def given(**options: object) -> dict:
    """The options that were given on the command line (not None)."""
    return {key: value for key, value in options.items() if value is not None}


def accelerator(device: str) -> str | None:
    """``--device`` as a training config override: ``auto`` states no preference, so a config's choice stands."""
    return None if device == DEVICE else device


def refuse_existing(path: Path, overwrite: bool) -> None:
    """FileExistsError for a file the user already has, unless ``--overwrite`` says to replace it."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; pass --overwrite to replace it")


def config_sections(path: Path | None, sections: tuple[str, ...] | None = None, output: Path | None = None) -> dict:
    """The YAML mapping in ``path`` (``{}`` without one); with ``sections``, a file of those
    mappings only (``model:``, ``train:``), each checked to be one. The file may not lie in the
    ``output`` folder (an overwrite would remove it)."""
    if path and output:
        refuse_overlap(output, [path], "output folder")
    data = load_yaml(path) if path else {}
    for key, value in data.items() if sections else ():
        if key not in sections:
            raise ValueError(f"{path}: {unknown_key(key, sections)}")
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{path}: {key}: expected a mapping of fields, got {type(value).__name__} {value!r}")
    return data


def with_flags(section: dict | None, **flags: object) -> dict:
    """A config section with the flags that were given laid over it."""
    return {**(section or {}), **given(**flags)}


def print_verdict(verdict: list[dict]) -> None:
    """Each claim of an evaluation on one line: green when its CI is above zero, red when not, grey untested."""
    for claim in verdict:
        difference = claim["difference"]
        shown = (f"{difference['value']:+.3f} [{difference['low']:+.3f}, {difference['high']:+.3f}]" if difference
                 else claim["untested"])
        style = {"pass": "bold green", "untested": "dim"}.get(claim["status"], "bold red")
        console.print(Text.assemble((f"{claim['status']}: ", style), f"{claim['claim']}: {shown}"), soft_wrap=True,
                      highlight=False)


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


def print_overlaps(data_overlap: dict) -> None:
    """The evaluated images that were in a role of the model's data: training roles (scored only when allowed) in
    red, pretraining (pixels only) in yellow."""
    for role, entry in data_overlap["roles"].items():
        if entry["either"]:
            kind = ("pixels only, allowed" if not entry["supervised"] else "SCORED ANYWAY (--allow-train-overlap)"
                    if data_overlap["allowed"] else "patients the official lists share, kept (splits: official)")
            console.print(f"{entry['either']} of {entry['of_images']} images ({entry['patients']} patients) were in "
                          f"the model's {role} data: {kind}", style="bold red" if entry["supervised"] else "yellow")
