"""Localization metrics against radiologists' boxes, and the image-blind location prior.

For each (image, finding) pair with ground-truth boxes, a heatmap (H x W, same pixels as
the boxes) is turned into predicted boxes (:func:`cxrlens.explain.boxes.heatmap_to_boxes`)
and scored:

* **IoU** (paper 000): for each ground-truth box, the best IoU with a predicted box;
* **localization accuracy at T(IoBB)** (paper 003, after Wang et al. 2017): a ground-truth
  box is hit when some predicted box has intersection / predicted-box area > T, for T in
  {0.1, 0.25, 0.5, 0.75}; the accuracy is the fraction of boxes hit;
* **average false positives per image** at each T: predicted boxes that hit no
  ground-truth box of the finding, per (image, finding) pair;
* **continuous DICE** (paper 004): ``2 sum(S G) / (sum(S^2) + sum(G^2))`` of the heatmap
  as a probability map ``S`` in [0, 1] and the union box mask ``G``.

The **location prior** is each finding's mean training box mask, used as the heatmap for
every image; it sees no pixels, so a CAM result means something only next to it.
:func:`compare` gives model, prior and their paired difference with bootstrap 95 % CIs (over the findings'
mean; :func:`compare_by_finding` per finding).
:func:`prior_weighted` is prior-aware localization (the heatmap re-weighted by the prior), a
method of its own that is compared with the prior alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from cxrlens.data.boxes import Box, box_iou, iobb, union_mask
from cxrlens.explain.boxes import BoxRule, heatmap_to_boxes

IOBB_THRESHOLDS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75)


def continuous_dice(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Paper 004: ``2 S.G / (S.S + G.G)`` with S in [0, 1]."""
    s = np.clip(np.asarray(heatmap, dtype=np.float64), 0, 1)
    g = np.asarray(mask, dtype=np.float64)
    denominator = (s * s).sum() + (g * g).sum()
    return float(2 * (s * g).sum() / denominator) if denominator > 0 else 0.0


def score_pair(heatmap: np.ndarray, truths: Sequence[Box], rule: BoxRule = BoxRule(),
               thresholds: Sequence[float] = IOBB_THRESHOLDS) -> dict:
    """Metrics of one (image, finding) pair: per-box IoU and hits, false positives, DICE."""
    predicted = heatmap_to_boxes(heatmap, rule.threshold, rule.rule)
    per_box = []
    for truth in truths:
        overlaps = [iobb(truth, box) for box in predicted]
        per_box.append({"iou": max((box_iou(box, truth) for box in predicted), default=0.0),
                        "hit": {f"{t:g}": any(o > t for o in overlaps) for t in thresholds}})
    false_positives = {f"{t:g}": sum(1 for box in predicted if all(iobb(truth, box) <= t for truth in truths))
                       for t in thresholds}
    height, width = heatmap.shape
    return {"boxes": per_box, "predicted": len(predicted), "false_positives": false_positives,
            "dice": continuous_dice(heatmap, union_mask(list(truths), height, width))}


def score_all(cases: Sequence[tuple[int, str, Sequence[Box]]], heatmap_of: Callable[[int, str], np.ndarray],
              rule: BoxRule = BoxRule(), thresholds: Sequence[float] = IOBB_THRESHOLDS) -> list[dict]:
    """:func:`score_pair` for each ``(image, finding, boxes)`` case, with its image and finding attached."""
    return [{"image": image, "finding": finding, **score_pair(heatmap_of(image, finding), boxes, rule, thresholds)}
            for image, finding, boxes in cases]


def _case_values(records: Sequence[dict], thresholds: Sequence[float]) -> dict[str, np.ndarray]:
    """Per case: mean IoU and hit rate over its boxes, FP count, DICE (cases are the bootstrap unit)."""
    values = {"iou": np.array([np.mean([b["iou"] for b in r["boxes"]]) for r in records]),
              "dice": np.array([r["dice"] for r in records])}
    for t in thresholds:
        key = f"{t:g}"
        values[f"acc@{key}"] = np.array([np.mean([b["hit"][key] for b in r["boxes"]]) for r in records])
        values[f"fp@{key}"] = np.array([r["false_positives"][key] for r in records], dtype=float)
    return values


def _weights(records: Sequence[dict]) -> np.ndarray:
    return np.array([len(r["boxes"]) for r in records], dtype=float)


def summarise(records: Sequence[dict], thresholds: Sequence[float] = IOBB_THRESHOLDS) -> dict[str, dict[str, float]]:
    """Per finding and ``"mean"`` (the mean over findings): IoU, DICE, acc@T, fp@T.

    IoU and accuracy average over ground-truth boxes, DICE and false positives over
    (image, finding) pairs.
    """
    findings = sorted({r["finding"] for r in records})
    table: dict[str, dict[str, float]] = {}
    for finding in findings:
        chosen = [r for r in records if r["finding"] == finding]
        values, weights = _case_values(chosen, thresholds), _weights(chosen)
        row = {"boxes": float(weights.sum()), "pairs": float(len(chosen))}
        for name, column in values.items():
            by_box = name == "iou" or name.startswith("acc@")
            row[name] = float(np.average(column, weights=weights) if by_box else column.mean())
        table[finding] = row
    if findings:
        metrics = [name for name in table[findings[0]] if name not in ("boxes", "pairs")]
        table["mean"] = {name: float(np.mean([table[f][name] for f in findings])) for name in metrics}
    return table


def _case_multiplicities(groups: Sequence[np.ndarray], count: int, resamples: int, rng: np.random.Generator
                         ) -> np.ndarray:
    """``resamples`` x ``count``: how often each of ``count`` cases is drawn when each finding's cases ``groups[f]``
    are drawn with replacement in turn (``rng.choice(group, len(group))`` per finding, per resample); one
    ``integers`` call with each case's finding size as its bound yields the same stream."""
    sizes = np.array([len(group) for group in groups])
    picked = rng.integers(0, np.broadcast_to(np.repeat(sizes, sizes), (resamples, int(sizes.sum()))))
    cases = np.concatenate(groups)[picked + np.repeat(np.cumsum(sizes) - sizes, sizes)]
    return np.bincount((cases + np.arange(resamples)[:, None] * count).ravel(),
                       minlength=resamples * count).reshape(resamples, count).astype(float)


def _resampled_means(table: np.ndarray, weights: np.ndarray, groups: Sequence[np.ndarray], by_box: np.ndarray,
                     multiplicity: np.ndarray) -> np.ndarray:
    """Per draw (rows of ``multiplicity``), the mean over findings of each finding's metrics as :func:`summarise`
    computes them on its drawn cases: multiplicity-weighted means, by boxes where ``by_box``."""
    rows = []
    for group in groups:
        drawn, boxes = multiplicity[:, group], weights[group]
        by_cases = drawn @ table[group] / len(group)
        by_boxes = (drawn * boxes) @ table[group] / (drawn @ boxes)[:, None]
        rows.append(np.where(by_box, by_boxes, by_cases))
    return np.mean(rows, axis=0)


def compare(model: Sequence[dict], prior: Sequence[dict], resamples: int = 1000, seed: int = 0,
            thresholds: Sequence[float] = IOBB_THRESHOLDS) -> dict[str, dict[str, dict[str, float]]]:
    """Model, prior and model - prior for each metric (mean over findings), with paired bootstrap 95 % CIs.

    Both record lists must score the same cases in the same order; resampling draws cases
    within each finding, so every finding keeps its weight in the mean.
    """
    if [(r["image"], r["finding"]) for r in model] != [(r["image"], r["finding"]) for r in prior]:
        raise ValueError("model and prior records must cover the same (image, finding) cases in the same order")
    rng = np.random.default_rng(seed)
    findings = sorted({r["finding"] for r in model})
    groups = {f: np.array([i for i, r in enumerate(model) if r["finding"] == f]) for f in findings}
    point_model, point_prior = summarise(model, thresholds)["mean"], summarise(prior, thresholds)["mean"]
    names = list(point_model)
    weights = _weights(model)
    by_box = np.array([name == "iou" or name.startswith("acc@") for name in names])
    values = [_case_values(records, thresholds) for records in (model, prior)]
    tables = [np.column_stack([columns[name] for name in names]) for columns in values]
    multiplicity = _case_multiplicities(list(groups.values()), len(model), resamples, rng)  # paired: both tables
    means = [_resampled_means(table, weights, list(groups.values()), by_box, multiplicity) for table in tables]
    draws = {name: list(zip(means[0][:, column], means[1][:, column])) for column, name in enumerate(names)}
    result = {}
    for name, pairs in draws.items():
        values = np.array(pairs) if pairs else np.full((1, 2), np.nan)
        bounds = {
            "model": np.percentile(values[:, 0], [2.5, 97.5]),
            "prior": np.percentile(values[:, 1], [2.5, 97.5]),
            "difference": np.percentile(values[:, 0] - values[:, 1], [2.5, 97.5]),
        }
        points = {"model": point_model[name], "prior": point_prior[name],
                  "difference": point_model[name] - point_prior[name]}
        result[name] = {key: {"value": float(points[key]), "low": float(bounds[key][0]), "high": float(bounds[key][1])}
                        for key in points}
    return result


def compare_by_finding(model: Sequence[dict], prior: Sequence[dict], resamples: int = 1000, seed: int = 0,
                       thresholds: Sequence[float] = IOBB_THRESHOLDS) -> dict[str, dict[str, dict[str, dict]]]:
    """:func:`compare` for each finding on its own cases: per finding and metric, model, prior and model - prior with
    paired bootstrap 95 % CIs (the cells of paper 003's Tables 2-3 and paper 004's Tables 2-3)."""
    findings = sorted({record["finding"] for record in model})
    return {finding: compare([r for r in model if r["finding"] == finding],
                             [r for r in prior if r["finding"] == finding], resamples, seed, thresholds)
            for finding in findings}


def prior_weighted(heatmap: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Prior-aware localization (not in the papers): the heatmap times the finding's location prior, scaled to a
    peak of 1, so the image can only move the prior's mass, never place a box where the finding never lies. Its
    value is what it adds over the prior alone, so it is always compared with the prior (never with plain CAMs)."""
    product = np.asarray(heatmap, dtype=np.float64) * prior
    peak = product.max()
    return product / peak if peak > 0 else product


def location_prior(boxes_by_image: Mapping[int, Sequence[Box]], size: int,
                   findings: Sequence[str]) -> dict[str, np.ndarray]:
    """Each finding's mean box mask over the given images that have boxes of it (size x size)."""
    prior = {}
    for finding in findings:
        masks = [union_mask([b for b in boxes if b.finding == finding], size, size)
                 for boxes in boxes_by_image.values() if any(b.finding == finding for b in boxes)]
        prior[finding] = np.mean(masks, axis=0) if masks else np.zeros((size, size))
    return prior


def cross_fitted_priors(boxes_by_image: Mapping[int, Sequence[Box]], groups: Mapping[int, str], size: int,
                        findings: Sequence[str], folds: int = 5, seed: int = 0) -> dict[int, dict[str, np.ndarray]]:
    """A prior per image built without that image's group (patient): k-fold cross-fitting by patient.

    Used when every boxed image is in the evaluated split (NIH's boxes are all in the
    official test list), so no training boxes exist to build the prior from.
    """
    patients = sorted({groups[i] for i in boxes_by_image})
    order = np.random.default_rng(seed).permutation(len(patients))
    fold_of = {patients[p]: rank % folds for rank, p in enumerate(order)}
    priors = {}
    for fold in range(folds):
        outside = {i: b for i, b in boxes_by_image.items() if fold_of[groups[i]] != fold}
        prior = location_prior(outside, size, findings)
        priors.update({i: prior for i in boxes_by_image if fold_of[groups[i]] == fold})
    return priors
