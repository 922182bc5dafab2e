"""Operating thresholds: per finding, the probability above which a radiograph is called positive.

Chosen on the validation split while training (never on the images a model is scored on) and
stored in the checkpoint, so ``evaluate``, the report, ``predict`` and ``serve`` decide with
the same cut. The rules (``TrainConfig.threshold_rule``):

* ``youden`` (default): the ROC point maximising Youden's J = sensitivity + specificity - 1;
* ``max-f1``: the point of the precision-recall curve with the highest F1;
* ``sensitivity``: the highest threshold whose sensitivity reaches ``target_sensitivity``
  (a screening operating point).

A finding whose validation labels are all one value gets no threshold (0.5 is used);
non-finite probabilities are left out of the choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

DEFAULT_THRESHOLD = 0.5
THRESHOLD_RULES: tuple[str, ...] = ("youden", "max-f1", "sensitivity")


def operating_threshold(labels: np.ndarray, scores: np.ndarray, rule: str = "youden",
                        target_sensitivity: float = 0.9) -> float | None:
    """The threshold ``rule`` picks on (``labels``, ``scores``); None when the labels are all one value."""
    finite = np.isfinite(np.asarray(scores, dtype=float))
    labels, scores = np.asarray(labels).astype(int)[finite], np.asarray(scores, dtype=float)[finite]
    if not 0 < labels.sum() < labels.size:
        return None
    if rule == "max-f1":
        precision, recall, cuts = precision_recall_curve(labels, scores)
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        return float(cuts[int(np.argmax(f1))])
    fpr, tpr, cuts = roc_curve(labels, scores, drop_intermediate=False)  # every cut: the exact target point too
    finite = np.isfinite(cuts)  # the first cut (inf) calls nothing positive
    if rule == "youden":
        best = int(np.argmax(np.where(finite, tpr - fpr, -np.inf)))
    elif rule == "sensitivity":
        best = int(np.argmax(finite & (tpr >= target_sensitivity)))
    else:
        raise ValueError(f"unknown threshold rule {rule!r}; choose one of {', '.join(THRESHOLD_RULES)}")
    return float(cuts[best])


def operating_thresholds(probabilities: np.ndarray, labels: np.ndarray, masks: np.ndarray, classes: Sequence[str],
                         rule: str = "youden", target_sensitivity: float = 0.9) -> dict[str, float]:
    """Per class (N x K inputs, known labels only), the threshold ``rule`` picks; classes it cannot pick for are left
    out."""
    thresholds = {}
    for column, name in enumerate(classes):
        known = np.asarray(masks[:, column]).astype(bool)
        value = operating_threshold(labels[known, column], probabilities[known, column], rule, target_sensitivity)
        if value is not None:
            thresholds[name] = value
    return thresholds
