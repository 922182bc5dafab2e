"""The localization half of ``cxrlens evaluate``: heatmaps of the boxed images, scored against the
radiologists' boxes next to the image-blind location prior (at the rule's threshold and at
every threshold of ``threshold_sweep``, paper 004 Table 2), prior-aware localization (the heatmap
times the prior, scored separately and compared with the prior alone), and the gallery of overlays.

The prior comes from the training split's boxes when it has any; where every boxed image
is in the evaluated split (NIH's boxes are all in the official test list), it is
cross-fitted by patient (each image's prior is built without its patient's fold).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import Progress

from cxrlens.config import EvaluateConfig
from cxrlens.data.boxes import Box
from cxrlens.data.cache import PreparedCache
from cxrlens.data.labels import ClassMatch, canonical
from cxrlens.data.preprocess import normalise
from cxrlens.evaluate.localization import (compare, compare_by_finding, cross_fitted_priors, location_prior,
                                          prior_weighted, score_all, summarise)
from cxrlens.evaluate.stage_times import StageTimes
from cxrlens.explain import BoxRule, CAMExplainer, heatmap_to_boxes
from cxrlens.explain.overlay import overlay
from cxrlens.models.loading import LoadedClassifier


def cache_batch(cache: PreparedCache, indices: np.ndarray | list[int], device: str) -> torch.Tensor:
    """uint8 B x 1 x S x S pixels of the cache items ``indices``."""
    return torch.from_numpy(np.stack([np.array(cache.images[int(i)]) for i in indices]))[:, None].to(device)


def boxes_of(cache: PreparedCache, index: int, findings: set[str]) -> list[Box]:
    """The item's boxes in cache pixels, named canonically, for the ``findings`` the model predicts."""
    boxes = [replace(box, finding=canonical(box.finding)) for box in cache.boxes(index)]
    return [box for box in boxes if box.finding in findings]


def localize(loaded: LoadedClassifier, match: ClassMatch, cache: PreparedCache, indices: np.ndarray,
             train_indices: np.ndarray, config: EvaluateConfig, rule: BoxRule, device: str,
             run_dir: Path, stages: StageTimes | None = None) -> dict | None:
    """CAM boxes vs radiologists' boxes for the evaluated images that have boxes; None when none do. ``stages``
    records the seconds of the CAM passes apart from the boxes, metrics and gallery around them."""
    stages = stages or StageTimes()
    findings = match.names
    scorable = set(findings)
    boxed = {int(i): boxes_of(cache, int(i), scorable) for i in indices}
    boxed = dict(list({i: boxes for i, boxes in boxed.items() if boxes}.items())[:config.max_boxed_images])
    if not boxed:
        return None
    cases = [(i, f, [b for b in boxes if b.finding == f]) for i, boxes in boxed.items()
             for f in sorted({b.finding for b in boxes})]
    train_boxes = {int(i): boxes_of(cache, int(i), scorable) for i in train_indices}
    train_boxes = {i: boxes for i, boxes in train_boxes.items() if boxes}
    if train_boxes:
        shared_prior = location_prior(train_boxes, cache.size, findings)
        priors = {i: shared_prior for i in boxed}
        prior_source = f"mean training box mask ({len(train_boxes)} training images with boxes)"
    else:
        groups = {i: cache.item(i).patient for i in boxed}
        priors = cross_fitted_priors(boxed, groups, cache.size, findings, seed=config.seed)
        prior_source = "mean box mask of the other patients' images, 5-fold cross-fitted by patient (no training boxes)"
    with stages("cam passes"):
        heatmaps = _heatmaps(loaded, match, cache, boxed, config, device)
    with stages("boxes, localization metrics and gallery"):
        return _scored(cases, heatmaps, priors, prior_source, config, rule, run_dir, cache)


def _scored(cases: list, heatmaps: dict, priors: dict, prior_source: str, config: EvaluateConfig, rule: BoxRule,
            run_dir: Path, cache: PreparedCache) -> dict:
    """Boxes from ``heatmaps`` and from the location ``priors`` scored against the radiologists' (``cases``), the
    threshold sweep with its CIs, ``localization.jsonl`` and the gallery."""
    model_records = score_all(cases, lambda i, f: heatmaps[(i, f)], rule)
    prior_records = score_all(cases, lambda i, f: priors[i][f], rule)
    sources = {"model": model_records, "prior": prior_records}
    if config.prior_weighted and rule.rule != "probability":  # rescaled to a peak of 1 it is no probability map
        sources["heatmap x prior"] = score_all(cases, lambda i, f: prior_weighted(heatmaps[(i, f)], priors[i][f]), rule)
    with open(run_dir / "localization.jsonl", "w") as handle:
        for source, records in sources.items():
            for record in records:
                handle.write(json.dumps({"source": source, **record}) + "\n")
    write_gallery(run_dir, cache, cases[:config.gallery], heatmaps, rule)
    sweep = {}
    for threshold in config.threshold_sweep:
        swept = replace(rule, threshold=threshold)
        model_at = score_all(cases, lambda i, f: heatmaps[(i, f)], swept)
        prior_at = score_all(cases, lambda i, f: priors[i][f], swept)
        sweep[f"{threshold:g}"] = {"model": summarise(model_at), "location_prior": summarise(prior_at),
                                   "comparison": compare(model_at, prior_at, config.bootstrap, config.seed),
                                   "by_finding": compare_by_finding(model_at, prior_at, config.bootstrap, config.seed)}
    weighted = sources.get("heatmap x prior")
    return {"cases": len(cases), "boxes": sum(len(c[2]) for c in cases), "prior": prior_source,
            "model": summarise(model_records), "location_prior": summarise(prior_records),
            "comparison": compare(model_records, prior_records, config.bootstrap, config.seed),
            "by_finding": compare_by_finding(model_records, prior_records, config.bootstrap, config.seed),
            "prior_weighted": {"model": summarise(weighted),
                               "comparison": compare(weighted, prior_records, config.bootstrap, config.seed)}
            if weighted else None,
            "threshold_sweep": sweep}


def _heatmaps(loaded: LoadedClassifier, match: ClassMatch, cache: PreparedCache, boxed: dict[int, list[Box]],
              config: EvaluateConfig, device: str) -> dict[tuple[int, str], np.ndarray]:
    """The heatmap of every (boxed image, finding of its boxes), batch by batch."""
    heatmaps: dict[tuple[int, str], np.ndarray] = {}
    order = sorted(boxed)
    refiner = loaded.refiner.to(device) if config.refine and loaded.refiner is not None else None
    explainer = CAMExplainer(loaded.model.to(device), config.cam, normalize=config.normalize_maps, refiner=refiner)
    with explainer, Progress(transient=True) as progress:
        task = progress.add_task(f"{config.cam} on {len(order)} boxed images", total=len(order))
        for start in range(0, len(order), 8):
            chunk = order[start:start + 8]
            images = normalise(cache_batch(cache, chunk, device), loaded.normalisation)
            wanted = sorted({b.finding for i in chunk for b in boxed[i]})
            maps = explainer(images, [match.model_column(name) for name in wanted]).maps.cpu().numpy()
            for row, i in enumerate(chunk):
                for slot, finding in enumerate(wanted):
                    if any(b.finding == finding for b in boxed[i]):
                        heatmaps[(i, finding)] = maps[row, slot]
            progress.advance(task, len(chunk))
    return heatmaps


def gallery_files(run_dir: Path) -> list[str]:
    """The overlay files an earlier evaluation in ``run_dir`` listed (nothing when it listed none)."""
    try:
        entries = json.loads((run_dir / "gallery.json").read_text())
        return [Path(entry["file"]).name for entry in entries]
    except (OSError, ValueError, TypeError, KeyError):
        return []


def write_gallery(run_dir: Path, cache: PreparedCache, cases: list, heatmaps: dict, rule: BoxRule) -> None:
    folder = run_dir / "gallery"
    folder.mkdir(exist_ok=True)
    entries = []
    for number, (index, finding, truths) in enumerate(cases):
        heatmap = heatmaps[(index, finding)]
        predicted = heatmap_to_boxes(heatmap, rule.threshold, rule.rule, finding)
        name = f"{number:03d}-{finding}.png"
        Image.fromarray(overlay(np.array(cache.images[index]), heatmap, truths, predicted)).save(folder / name)
        geometry = cache.geometry(index)
        entries.append({"file": f"gallery/{name}", "image": Path(cache.item(index).path).name, "finding": finding,
                        "truth": [b.to_dict() for b in truths], "predicted": [b.to_dict() for b in predicted],
                        "predicted_in_original_pixels": [geometry.to_source(b).to_dict() for b in predicted]})
    (run_dir / "gallery.json").write_text(json.dumps(entries, indent=2))
