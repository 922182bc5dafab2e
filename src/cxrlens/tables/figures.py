"""The papers' figures drawn from the runs' own outputs (no model is run here).

* ``pr-iso-f1`` (paper 000 Fig. 5): each model's precision-recall curve on its evaluation's
  ``predictions.csv``, micro-averaged over findings, its average precision in the legend, over
  iso-F1 curves;
* ``cam-grid`` (paper 000 Fig. 3): the evaluations' gallery overlays of the same (image,
  finding) cases side by side, one column per CAM method;
* ``accuracy-by-epoch`` (paper 002 Fig. 2): the linear probe's accuracy (95 % CI) on each
  pretraining snapshot;
* ``tsne`` and ``probe-gradcam`` (paper 002 Figs. 3-4): the panels the linear evaluation drew.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
from sklearn.metrics import average_precision_score, precision_recall_curve  # noqa: E402

from cxrlens.evaluate.evaluator import read_predictions  # noqa: E402
from cxrlens.tables.layouts import FigureLayout, Panel, paper_figures  # noqa: E402
from cxrlens.tables.runs import PaperRuns, step_metrics  # noqa: E402

GALLERY_ROWS = 4


@dataclass(frozen=True)
class DrawnFigure:
    layout: FigureLayout
    file: str | None
    """The PNG's name in the tables folder; None when it could not be drawn (``skipped`` says why)."""
    skipped: str = ""


def _slug(label: str) -> str:
    return label.lower().replace(". ", "-").replace(" ", "-").replace(".", "")


def _pr_curves(panels: list[tuple[Panel, Path]], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 5.5))
    for f1 in (0.2, 0.4, 0.6, 0.8):  # iso-F1 curves: precision = F1 r / (2 r - F1)
        recall = np.linspace(f1 / (2 - f1) + 1e-3, 1, 200)
        axis.plot(recall, f1 * recall / (2 * recall - f1), color="#bbb", lw=0.8)
        axis.annotate(f"F1={f1:.1f}", (0.9, f1 * 0.9 / (1.8 - f1) + 0.02), color="#888", fontsize=8)
    for panel, folder in panels:
        _, probabilities, labels = read_predictions(folder)
        scores = np.concatenate([probabilities[name] for name in probabilities])
        truth = np.concatenate([labels[name] for name in labels])
        known = np.isfinite(truth)
        precision, recall, _ = precision_recall_curve(truth[known], scores[known])
        average = average_precision_score(truth[known], scores[known])
        axis.plot(recall, precision, lw=1.6, label=f"{panel.title} (micro AP {average:.2f})")
    axis.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02))
    axis.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _cam_grid(panels: list[tuple[Panel, Path]], path: Path) -> None:
    galleries = [json.loads((folder / "gallery.json").read_text()) for _, folder in panels]
    cases = [(entry["image"], entry["finding"]) for entry in galleries[0]]
    shared = [case for case in cases if all(case in {(e["image"], e["finding"]) for e in g} for g in galleries)]
    shared = shared[:GALLERY_ROWS]
    if not shared:
        raise ValueError("the evaluations' galleries share no (image, finding) case")
    figure, axes = plt.subplots(len(shared), len(panels), figsize=(2.6 * len(panels), 2.7 * len(shared)),
                                squeeze=False)
    for column, ((panel, folder), gallery) in enumerate(zip(panels, galleries)):
        files = {(entry["image"], entry["finding"]): entry["file"] for entry in gallery}
        for row, case in enumerate(shared):
            axis = axes[row][column]
            axis.imshow(plt.imread(folder / files[case]))
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(panel.title, fontsize=10)
            if column == 0:
                axis.set_ylabel(case[1], fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _accuracy_by_epoch(panels: list[tuple[Panel, Path]], path: Path) -> None:
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for axis, (panel, folder) in zip(axes[0], panels):
        epochs = (step_metrics(folder.parent, folder.name) or {}).get("by_epoch", {}).get("epochs")
        if not epochs:
            raise ValueError(f"{folder}: no accuracy per pretraining epoch (linear eval by_epoch, keep_epochs)")
        numbers = sorted(int(epoch) for epoch in epochs)
        rows = [next(iter(epochs[str(epoch)].values())).get("acc") for epoch in numbers]
        if not all(rows):
            raise ValueError(f"{folder}: the probe scored no class at some snapshot (too few labelled images)")
        values = np.array([row["value"] for row in rows]) * 100
        errors = np.array([[row["value"] - row["low"], row["high"] - row["value"]] for row in rows]).T * 100
        axis.errorbar(numbers, values, yerr=errors, marker="o", capsize=3)
        axis.set(title=panel.title, xlabel="pretraining epoch", ylabel="accuracy (%)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _panel_images(name: str) -> Callable[[list[tuple[Panel, Path]], Path], None]:
    """A figure made of the ``name`` image each panel's step drew, one above the other."""

    def draw(panels: list[tuple[Panel, Path]], path: Path) -> None:
        images = []
        for panel, folder in panels:
            if not (folder / name).is_file():
                raise ValueError(f"{folder}: no {name} (linear eval by_epoch / gradcam_images)")
            images.append((panel, plt.imread(folder / name)))
        figure, axes = plt.subplots(len(images), 1, figsize=(12, 3.4 * len(images)), squeeze=False)
        for axis, (panel, image) in zip(axes[:, 0], images):
            axis.imshow(image)
            axis.set_title(panel.title, fontsize=11)
            axis.axis("off")
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)

    return draw


DRAWERS: dict[str, Callable[[list[tuple[Panel, Path]], Path], None]] = {
    "pr-iso-f1": _pr_curves, "cam-grid": _cam_grid, "accuracy-by-epoch": _accuracy_by_epoch,
    "tsne": _panel_images("tsne.png"), "probe-gradcam": _panel_images("gradcam.png")}


def draw_figures(runs: PaperRuns, out: Path, layouts: Sequence[FigureLayout] | None = None) -> list[DrawnFigure]:
    """Every figure of ``runs.paper`` whose steps ran, as ``out/<fig-N>.png``; the others say what is missing."""
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    for layout in paper_figures(runs.paper) if layouts is None else layouts:
        panels = [(panel, runs.folders[panel.experiment] / panel.step) for panel in layout.panels
                  if panel.experiment in runs.folders and (runs.folders[panel.experiment] / panel.step).is_dir()]
        if not panels:
            drawn.append(DrawnFigure(layout, None, "none of its steps ran (" + ", ".join(
                f"{panel.experiment}/{panel.step}" for panel in layout.panels) + ")"))
            continue
        name = f"{_slug(layout.label)}.png"
        try:
            DRAWERS[layout.kind](panels, out / name)
        except (OSError, ValueError) as error:
            drawn.append(DrawnFigure(layout, None, str(error)))
            continue
        drawn.append(DrawnFigure(layout, name))
    return drawn
