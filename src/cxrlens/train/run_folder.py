"""A training run's folder, the same for every recipe (supervised, fine-tuning, pretraining, SEAM)::

    RUN/config.yaml            what ran: the resolved config and the data it used
    RUN/metrics.jsonl, .csv    one row per epoch
    RUN/checkpoints/last.ckpt  the training state --resume continues from
    RUN/checkpoints/best.ckpt  the model at its best validation epoch (runs with a validation set)
    RUN/checkpoints/epoch-NNNN.ckpt  snapshots every ``keep_every`` epochs
    RUN/cxrlens-run.json       marks the folder as a cxrlens run

An existing run is never replaced unless asked: :meth:`RunFolder.claim` refuses a folder
holding a run, unless resuming it or overwriting it, and ``--overwrite`` removes only the
files a run writes. A folder holding anything else, or one that is, lies inside or
contains an input (a cache, an encoder, a checkpoint), is never used.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from cxrlens import __version__
from cxrlens.config import dump_yaml
from cxrlens.paths import refuse_overlap

MARKER = "cxrlens-run.json"
RUN_FILES = (MARKER, "config.yaml", "metrics.jsonl", "metrics.csv", "encoder.ckpt", "refined.ckpt")
CHECKPOINT_NAME = re.compile(r"(last|best|epoch-\d{4,})\.ckpt|\..+\.ckpt\.tmp-\d+")
"""The checkpoints a run writes (and their temporary files while writing)."""


class RunExistsError(RuntimeError):
    """The run folder already holds checkpoints and neither resume nor overwrite was asked."""


class RunFolder:
    """Paths and writers of one run folder (see the module docstring); ``inputs`` are what the run reads."""

    def __init__(self, path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> None:
        self.path = Path(path)
        self.inputs = tuple(inputs)
        self.checkpoints = self.path / "checkpoints"
        self.last = self.checkpoints / "last.ckpt"
        self.best = self.checkpoints / "best.ckpt"

    def snapshot(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch-{epoch:04d}.ckpt"

    def is_run(self) -> bool:
        """Whether the folder holds a cxrlens run (its marker, or a run's checkpoint)."""
        return (self.path / MARKER).is_file() or self.last.is_file()

    def claim(self, resume: bool, overwrite: bool, clear: bool = True) -> None:
        """Take the folder for a run, or refuse (see the module docstring). ``clear``: this is the
        process that writes (rank 0); with ``overwrite`` it removes the old run's files."""
        refuse_overlap(self.path, self.inputs, "run folder")
        if self.path.is_dir() and any(self.path.iterdir()) and not self.is_run():
            raise RunExistsError(f"{self.path}: folder holds files and is not a cxrlens run, so cxrlens will not "
                                 "write into it or delete anything there (not even with --overwrite); choose an "
                                 "empty or new folder")
        if self.last.exists() and not (resume or overwrite):
            raise RunExistsError(f"{self.path}: holds a run already; pass --resume to continue it or --overwrite "
                                 "to replace it")
        if not clear:
            return
        if overwrite and not resume:  # the user asked: the old run's own files go, nothing else
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
            for path in self.checkpoints.glob("*"):
                if CHECKPOINT_NAME.fullmatch(path.name):
                    path.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / MARKER).write_text(json.dumps({"cxrlens": __version__}) + "\n")

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
