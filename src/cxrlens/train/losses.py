"""Multi-label losses on logits with a known-label mask (False entries never contribute).

* :func:`dynamic_weighted_bce`: paper 003 eq. (3)-(5), class weights recomputed per batch,
  ``beta_P = (|P|+|N|)/|P|``, ``beta_N = (|P|+|N|)/|N|``, summed over classes, averaged
  over images; a class with no positives (or no negatives) in the batch simply has no
  such terms, so nothing divides by zero.
* :func:`positive_weighted_bce`: BCE with fixed per-class positive weights ``N_c / P_c``
  from the training labels (paper 000); see :func:`positive_weights`.
* :func:`multilabel_soft_margin`: ``torch.nn.functional.multilabel_soft_margin_loss``
  restricted to known labels (used by SEAM in paper 003).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _masked_mean_over_images(per_entry: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over classes of masked entries, mean over images."""
    return (per_entry * mask).sum() / max(per_entry.shape[0], 1)


def dynamic_weighted_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Paper 003 eq. (3): ``sum_c -beta_P y log f - beta_N (1-y) log(1-f)``, batch-wise weights."""
    mask = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask.bool()
    known = mask.to(logits.dtype)
    targets = targets.to(logits.dtype)
    positives = (targets * known).sum(dim=0)
    negatives = ((1 - targets) * known).sum(dim=0)
    total = positives + negatives
    beta_p = torch.where(positives > 0, total / positives.clamp(min=1), torch.zeros_like(total))
    beta_n = torch.where(negatives > 0, total / negatives.clamp(min=1), torch.zeros_like(total))
    weights = targets * beta_p + (1 - targets) * beta_n
    per_entry = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weights
    return _masked_mean_over_images(per_entry, known)


def positive_weights(labels: np.ndarray, masks: np.ndarray) -> torch.Tensor:
    """Paper 000's BCE positive weights ``N_c / P_c`` from training labels (1 where P_c = 0)."""
    positives = (labels * masks).sum(axis=0)
    negatives = ((1 - labels) * masks).sum(axis=0)
    weights = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
    return torch.as_tensor(weights, dtype=torch.float32)


def positive_weighted_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                          pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE with positive weights (paper 000), mean over known entries."""
    mask = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask.bool()
    known = mask.to(logits.dtype)
    weight = None if pos_weight is None else pos_weight.to(logits.device, logits.dtype)
    per_entry = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none", pos_weight=weight)
    return (per_entry * known).sum() / known.sum().clamp(min=1)


def multilabel_soft_margin(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multilabel soft-margin loss over known labels (equals torch's when all are known)."""
    mask = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask.bool()
    known = mask.to(logits.dtype)
    targets = targets.to(logits.dtype)
    per_entry = -(targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits))
    per_image = (per_entry * known).sum(dim=1) / known.sum(dim=1).clamp(min=1)
    return per_image.mean()
