"""Experiment tracking through Lightning's loggers: ``--logger tensorboard | mlflow | csv | none | auto``.

* ``tensorboard``: event files in ``RUN/logs/`` (Fabric's ``TensorBoardLogger``; ``tensorboard
  --logdir runs`` shows every run below a folder).
* ``mlflow``: one MLflow run per cxrlens run (Lightning's ``MLFlowLogger``), in the tracking
  server or store of ``MLFLOW_TRACKING_URI`` when set, else in a local SQLite store beside the
  run folder (``RUN/../mlflow.db``, artifacts in ``RUN/../mlartifacts``; ``mlflow ui
  --backend-store-uri sqlite:///runs/mlflow.db`` browses them). Experiment ``cxrlens`` unless
  ``MLFLOW_EXPERIMENT_NAME`` says otherwise.
* ``csv``: Fabric's ``CSVLogger`` in ``RUN/logs/`` (the run folder's own ``metrics.csv`` is
  written whatever the logger).
* ``auto`` (the default): TensorBoard when it is installed, else none.

A run logs its resolved config as hyperparameters, one row of metrics per epoch (the learning
curves), and at its end its ``config.yaml`` and ``metrics.csv`` as artifacts (MLflow) or text
(TensorBoard); an evaluation logs its headline metrics with their CIs and its ``metrics.json``,
report and model card. The loggers ship in the ``track`` extra; a logger asked for but not
installed fails in one line naming the install.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import get_args

from cxrlens.config import Logger
from cxrlens.extras import install_line

LOGGERS: tuple[str, ...] = get_args(Logger)
LOGS = "logs"
"""The folder of a run where TensorBoard and CSV logs go."""
TRACK_INSTALL = install_line("track")
_USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")
"""The user's MLflow store, read once: MLflow itself sets the variable to the last store a run used."""
_NEEDS = {"tensorboard": ("tensorboard", "TensorBoard"), "mlflow": ("mlflow", "MLflow")}


def resolve_logger(choice: str) -> str:
    """The logger ``choice`` means here (``auto``: ``tensorboard`` when installed, else ``none``); a clear error for
    an unknown one or one whose package is missing."""
    if choice not in LOGGERS:
        raise ValueError(f"logger must be one of {', '.join(LOGGERS)}, not {choice!r}")
    if choice == "auto":
        return "tensorboard" if _installed("tensorboard") else "none"
    if choice in _NEEDS and not _installed(_NEEDS[choice][0]):
        raise ValueError(f"--logger {choice} needs {_NEEDS[choice][1]}, which is not installed: {TRACK_INSTALL}")
    return choice


def remove_logs(run_dir: str | os.PathLike) -> None:
    """Remove the TensorBoard / CSV logs of an earlier run or evaluation in ``run_dir`` (when it is replaced)."""
    shutil.rmtree(Path(run_dir) / LOGS, ignore_errors=True)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class Tracker:
    """The loggers of one run folder (none for ``none``); every method is a no-op without loggers."""

    def __init__(self, choice: str, run_dir: str | os.PathLike, name: str | None = None) -> None:
        self.kind = resolve_logger(choice)
        self.run_dir = Path(run_dir)
        self.logger = _make_logger(self.kind, self.run_dir, name or self.run_dir.name)

    def hyperparameters(self, values: Mapping[str, object]) -> None:
        """The run's settings (nested mappings are flattened by the logger)."""
        if self.logger is not None:
            self.logger.log_hyperparams(dict(values))

    def metrics(self, values: Mapping[str, object], step: int) -> None:
        """The numeric entries of ``values`` at ``step`` (an epoch)."""
        numeric = {key: float(value) for key, value in values.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool)}
        if self.logger is not None and numeric:
            self.logger.log_metrics(numeric, step)

    def artifacts(self, paths: Iterable[str | os.PathLike]) -> None:
        """Files of the run that exist: MLflow artifacts, TensorBoard text (the text files among them)."""
        found = [Path(path) for path in paths if Path(path).is_file()]
        if self.kind == "mlflow":
            for path in found:
                self.logger.experiment.log_artifact(self.logger.run_id, str(path))
        elif self.kind == "tensorboard":
            for path in found:
                if path.suffix in (".yaml", ".csv", ".md", ".json"):
                    text = path.read_text(errors="replace")
                    self.logger.experiment.add_text(path.name, f"```\n{text}\n```")

    def close(self, status: str = "success") -> None:
        if self.logger is not None:
            self.logger.finalize(status)


def _make_logger(kind: str, run_dir: Path, name: str) -> object | None:
    if kind == "tensorboard":
        from lightning.fabric.loggers import TensorBoardLogger

        return TensorBoardLogger(root_dir=run_dir / LOGS, name="", version="")
    if kind == "csv":
        from lightning.fabric.loggers import CSVLogger

        return CSVLogger(root_dir=run_dir / LOGS, name="", version="")
    if kind == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        store = run_dir.resolve().parent
        return MLFlowLogger(experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME", "cxrlens"), run_name=name,
                            tracking_uri=_USER_TRACKING_URI or f"sqlite:///{store / 'mlflow.db'}",
                            artifact_location=None if _USER_TRACKING_URI else str(store / "mlartifacts"))
    return None
