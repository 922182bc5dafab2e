"""A training run's folder, the same for every recipe (supervised, fine-tuning, pretraining, SEAM)::

    RUN/config.yaml            what ran: the resolved config and the data it used
    RUN/metrics.jsonl, .csv    one row per epoch
    RUN/checkpoints/last.ckpt  the training state --resume continues from
    RUN/checkpoints/best.ckpt  the model at its best validation epoch (runs with a validation set)
    RUN/checkpoints/epoch-NNNN.ckpt  snapshots after the ``keep_epochs``
    RUN/cxrlens.json           marks the folder as a cxrlens run (:mod:`cxrlens.folders`)
    RUN/logs/                  TensorBoard events or CSV logs of ``--logger`` (:mod:`cxrlens.tracking`)

An existing run is never replaced unless asked: :meth:`RunFolder.claim` refuses a folder
holding a run, unless resuming it or overwriting it, and ``--overwrite`` removes only the
files a run writes. A folder holding anything else, or one that is, lies inside or
contains an input (a cache, an encoder, a checkpoint, its config file), is never used.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from cxrlens.config import dump_yaml
from cxrlens.folders import check_folder, claim_folder, remove_own
from cxrlens.tracking import remove_logs

KIND = "run"
RUN_FILES = ("config.yaml", "metrics.jsonl", "metrics.csv", "encoder.ckpt", "refined.ckpt")
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

    def claim(self, resume: bool, overwrite: bool, clear: bool = True) -> None:
        """Take the folder for a run, or refuse (see the module docstring). ``clear``: this is the
        process that writes (rank 0); with ``overwrite`` it removes the old run's files."""
        check_folder(self.path, KIND, self.inputs)
        if self.last.exists() and not (resume or overwrite):
            raise RunExistsError(f"{self.path}: holds a run already; pass --resume to continue it or --overwrite "
                                 "to replace it")
        if not clear:
            return
        claim_folder(self.path, KIND, self.inputs)
        if overwrite and not resume:  # the user asked: the old run's own files go, nothing else
            remove_own(self.path, RUN_FILES)
            remove_logs(self.path)
            remove_own(self.checkpoints, [path.name for path in self.checkpoints.glob("*")
                                          if CHECKPOINT_NAME.fullmatch(path.name)])

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
