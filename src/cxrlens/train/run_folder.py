"""A training run's folder, the same for every recipe (supervised, fine-tuning, pretraining, SEAM)::

    RUN/config.yaml            what ran: the resolved config and the data it used
    RUN/metrics.jsonl, .csv    one row per epoch
    RUN/checkpoints/last.ckpt  the training state --resume continues from
    RUN/checkpoints/best.ckpt  the model at its best validation epoch (runs with a validation set)
    RUN/checkpoints/epoch-NNNN.ckpt  snapshots every ``keep_every`` epochs

An existing run is never replaced unless asked: :meth:`RunFolder.claim` refuses a folder
holding a run, unless resuming it or overwriting it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from cxrlens.config import dump_yaml


class RunExistsError(RuntimeError):
    """The run folder already holds checkpoints and neither resume nor overwrite was asked."""


class RunFolder:
    """Paths and writers of one run folder (see the module docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.last = self.checkpoints / "last.ckpt"
        self.best = self.checkpoints / "best.ckpt"

    def snapshot(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch-{epoch:04d}.ckpt"

    def claim(self, resume: bool, overwrite: bool, clear: bool = True) -> None:
        """Refuse a folder holding a run unless ``resume`` or ``overwrite``; with ``overwrite`` (and
        ``clear``: the process that writes) remove the old run's checkpoints and metrics."""
        if self.last.exists() and not (resume or overwrite):
            raise RunExistsError(f"{self.path}: holds a run already; pass --resume to continue it or --overwrite "
                                 "to replace it")
        if overwrite and not resume and clear:
            shutil.rmtree(self.checkpoints, ignore_errors=True)  # the user asked with --overwrite
            for name in ("metrics.jsonl", "metrics.csv"):
                (self.path / name).unlink(missing_ok=True)

    def write_config(self, record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        dump_yaml(record, self.path / "config.yaml")

    def write_history(self, history: Sequence[dict]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in history))
        with open(self.path / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
