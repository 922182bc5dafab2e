"""Figures for the report: ROC curves, precision-recall curves with iso-F1 lines, training curves."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve  # noqa: E402


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """ROC curve per class (labels, probabilities), AUROC in the legend."""
    figure, axis = plt.subplots(figsize=(5.5, 5))
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        axis.plot(fpr, tpr, lw=1.3, label=f"{name} ({roc_auc_score(labels, scores):.3f})")
    axis.plot([0, 1], [0, 1], ls="--", c="0.6", lw=0.8)
    axis.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    axis.legend(fontsize=7, loc="lower right")
    return _png(figure)


def precision_recall_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                            iso_f1: Sequence[float] = (0.2, 0.4, 0.6, 0.8)) -> bytes:
    """Precision-recall curve per class, average precision in the legend, iso-F1 lines (paper 000 Fig. 5)."""
    figure, axis = plt.subplots(figsize=(5.5, 5))
    recall_grid = np.linspace(0.01, 1, 200)
    for f1 in iso_f1:
        precision = f1 * recall_grid / (2 * recall_grid - f1)
        keep = (precision > 0) & (precision <= 1)
        axis.plot(recall_grid[keep], precision[keep], c="0.75", lw=0.8)
        axis.annotate(f"F1={f1:g}", xy=(0.9, precision[keep][-1] if keep.any() else 0), fontsize=7, color="0.5")
    for name, (labels, scores) in curves.items():
        precision, recall, _ = precision_recall_curve(labels, scores)
        axis.plot(recall, precision, lw=1.3, label=f"{name} (AP {average_precision_score(labels, scores):.3f})")
    axis.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    axis.legend(fontsize=7, loc="upper right")
    return _png(figure)


def training_figure(history: Sequence[Mapping[str, float]]) -> bytes:
    """Loss curves and validation mean AUROC per epoch."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    epochs = [row["epoch"] for row in history]
    for key in ("train_loss", "val_loss"):
        values = [row.get(key) for row in history]
        if any(v is not None for v in values):
            left.plot(epochs, values, marker="o", ms=3, label=key)
    left.set(xlabel="epoch", title="loss")
    left.legend(fontsize=8)
    auroc = [row.get("val_mean_auroc") for row in history]
    if any(v is not None for v in auroc):
        right.plot(epochs, auroc, marker="o", ms=3, c="C2")
    right.set(xlabel="epoch", title="validation mean AUROC")
    return _png(figure)
