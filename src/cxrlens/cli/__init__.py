"""The ``cxrlens`` command line: thin wrappers that parse options and call the API.

The root app merges one module per job (typer's one-file-per-command pattern), each
built only on :mod:`cxrlens.cli._common` and library code:

* ``data``: ``data inspect``, ``data prepare``;      * ``models``: ``models list``;
* ``train``: ``train-supervised``, ``finetune``, ``refine``, ``pretrain``, ``augment``;
* ``evaluate``: ``evaluate``, ``linear-eval``, ``report``, ``tsne``;
* ``infer``: ``predict``, ``export``, ``serve``;      * ``run``: ``run``, ``quickstart``, ``tables``.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from cxrlens import __version__
from cxrlens.cli import data, evaluate, infer, models, run, train
from cxrlens.cli._common import OneLineHandler

app = typer.Typer(help="Chest X-ray classifiers from mostly unlabeled images, with heatmaps and boxes.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
for _commands in (data, models, train, evaluate, infer, run):
    app.add_typer(_commands.app)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logging.")] = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING
    handler = OneLineHandler(level)  # the level also holds for libraries' records that propagate (Lightning's info)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler])


@app.command()
def version() -> None:
    """Print the cxrlens version."""
    typer.echo(__version__)
