"""The run folders one paper's tables draw on, and the numbers in them.

``cxrlens run`` writes ``RUNS/<experiment>/summary.json`` (paper, scale, config name) and each
step's ``metrics.json`` under ``RUNS/<experiment>/<step>/``. A paper's tables may gather
several experiments (paper 000's Table II has one column per config), so the runs of a
paper are the run folder asked for and its siblings of the same paper and scale. Every path
here is relative to the runs' parent folder, so a copied folder of runs still works.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Number:
    """One of our numbers: a value and, where the run computed one, its 95 % CI."""

    value: float
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class PaperRuns:
    """The runs of one paper at one scale: config name -> its run folder and its summary; ``config`` is the run
    asked for."""

    paper: str
    scale: str
    config: str
    folders: dict[str, Path]
    summaries: dict[str, dict]


def read_summary(run_dir: Path) -> dict:
    """A run's ``summary.json``; ValueError naming the file when it is missing, not JSON, or written by a cxrlens
    before tables (no paper, scale and config)."""
    path = Path(run_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except OSError:
        raise ValueError(f"{path}: missing; is {run_dir} the folder of a finished `cxrlens run`?") from None
    except ValueError:
        raise ValueError(f"{path}: not valid JSON") from None
    if not isinstance(summary, dict) or not all(key in summary for key in ("paper", "scale", "config")):
        raise ValueError(f"{path}: written by an older cxrlens (no paper, scale and config); run the experiment again "
                         "to get its tables")
    return summary


def paper_runs(run_dir: str | Path) -> PaperRuns:
    """The paper and scale of ``run_dir`` and every finished run of the same paper and scale beside it (``run_dir``
    itself for its own config, whatever copies of it lie beside it)."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    paper, scale = summary["paper"], summary["scale"]
    folders, summaries = {summary["config"]: run_dir}, {summary["config"]: summary}
    parent = run_dir.resolve().parent
    for folder in sorted(path for path in parent.iterdir() if path.is_dir() and path != run_dir.resolve()):
        try:
            other = read_summary(folder)
        except ValueError:
            continue  # not a run, or one from before tables
        if (other["paper"], other["scale"]) == (paper, scale) and other["config"] not in folders:
            folders[other["config"]], summaries[other["config"]] = run_dir / ".." / folder.name, other
    return PaperRuns(paper, scale, summary["config"], folders, summaries)


def step_metrics(folder: Path, step: str) -> dict | None:
    """The ``metrics.json`` of ``step`` in a run folder; None when that step has not run."""
    path = folder / step / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def lookup(metrics: dict | None, path: str) -> object:
    """The node at ``path`` ('classification/Edema/auc') of a step's metrics; None where there is none."""
    node: object = metrics
    for part in path.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def as_number(node: object) -> Number | None:
    """A metrics node as a :class:`Number`: ``{"value", "low", "high"}`` or a bare number."""
    if isinstance(node, dict) and isinstance(node.get("value"), (int, float)):
        return Number(float(node["value"]), _finite(node.get("low")), _finite(node.get("high")))
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return Number(float(node))
    return None


def _finite(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value == value else None


@dataclass(frozen=True)
class FloorPaths:
    """Where a metric's floor lies in the same metrics: its value and the paired model - floor difference."""

    name: str
    value: str
    difference: str


def floor_paths(metric: str) -> FloorPaths | None:
    """The floor beside ``metric`` (paths in the same metrics.json): the location prior beside a heatmap's
    localization metric, the raw-pixel logistic regression beside an AUROC; None for metrics without one."""
    parts = metric.split("/")
    if parts[0] == "localization" and parts[-1] == "model":
        base = "/".join(parts[:-1])
        return FloorPaths("location prior", f"{base}/prior", f"{base}/difference")
    if parts[-1] != "auc":
        return None
    if parts[0] == "classification" and len(parts) == 3:
        return FloorPaths("raw-pixel floor", f"floor/findings/{parts[1]}/floor", f"floor/findings/{parts[1]}/difference")
    if parts[0] == "classification_mean":
        return FloorPaths("raw-pixel floor (the findings both score)", "floor/mean/floor", "floor/mean/difference")
    if parts[0] == "results" and len(parts) == 4:  # linear evaluation: results/<fraction>/<class>/auc
        return FloorPaths("raw-pixel floor", f"floor/{parts[1]}/findings/{parts[2]}/floor",
                          f"floor/{parts[1]}/findings/{parts[2]}/difference")
    return None
