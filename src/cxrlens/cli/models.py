"""``cxrlens models list``: every registered architecture with its parameter count."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cxrlens.config import ModelConfig
from cxrlens.models import ARCHITECTURES, build_model, count_parameters

app = typer.Typer()
models_app = typer.Typer(help="List the model architectures.", no_args_is_help=True)
app.add_typer(models_app, name="models")

PAPER_003_TABLE_4 = {("standard", "resnet50"): "23,536,718", ("multires", "resnet50"): "26,273,615",
                     ("standard", "efficientnet_b4"): "17,573,718", ("multires", "efficientnet_b4"): "18,913,543"}


@models_app.command("list")
def models_list(
    num_classes: Annotated[int, typer.Option(help="Classes of the head.", min=1)] = 14,
    in_chans: Annotated[int, typer.Option(help="Input channels (papers' counts use 3).", min=1)] = 1,
) -> None:
    """Print every architecture with its parameter count (paper 003 Table 4 beside it)."""
    table = Table(title=f"architectures ({num_classes} classes, {in_chans}-channel input)")
    for column in ("arch", "backbone", "pooling", "parameters", "paper 003 Table 4 (3-ch)"):
        table.add_column(column, justify="right" if column[0] in "pP" else "left")
    for arch in ARCHITECTURES:
        for backbone, pooling in ARCHITECTURES.info(arch).get("showcase", ()):
            model = build_model(ModelConfig(arch=arch, backbone=backbone, pooling=pooling, num_classes=num_classes,
                                            in_chans=in_chans))
            table.add_row(arch, backbone, pooling, f"{count_parameters(model):,}",
                          PAPER_003_TABLE_4.get((arch, backbone), ""))
    Console().print(table)
