"""Per-class AUROC with known-label masks (scikit-learn), and their mean."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def per_class_auroc(probabilities: np.ndarray, labels: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    """AUROC of each class over its known labels; NaN where a class has one label value only."""
    masks = np.ones_like(labels, dtype=bool) if masks is None else masks.astype(bool)
    scores = np.full(labels.shape[1], np.nan)
    for column in range(labels.shape[1]):
        known = masks[:, column]
        values = labels[known, column]
        if values.size and 0 < values.sum() < values.size:
            scores[column] = roc_auc_score(values, probabilities[known, column])
    return scores


def mean_auroc(probabilities: np.ndarray, labels: np.ndarray, masks: np.ndarray | None = None) -> float:
    """Mean AUROC over the classes where it is defined (NaN if none is)."""
    scores = per_class_auroc(probabilities, labels, masks)
    return float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")
