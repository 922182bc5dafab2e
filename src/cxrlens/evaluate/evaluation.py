"""``cxrlens evaluate``: a classifier checkpoint on a split of a prepared cache.

Writes to the run folder:

* ``metrics.json`` - per-class AUROC, AUPRC, ACC, SEN, SPE, F1 with bootstrap 95 % CIs
  (threshold 0.5 on the probability), their means, and for the images with
  radiologists' boxes the localization metrics of the model's CAMs next to the
  image-blind location prior and their difference (:mod:`cxrlens.evaluate.localization`);
* ``predictions.csv`` - every image's probabilities and labels (ROC / PR curves);
* ``localization.jsonl`` - every scored (image, finding) case, model and prior;
* ``gallery/*.png`` + ``gallery.json`` - CAM overlays with true and predicted boxes (boxes in
  cache pixels, and the predicted ones also in the original image's pixels).

The prior comes from the training split's boxes when it has any; where every boxed
image is in the evaluated split (NIH's boxes are all in the official test list), it is
cross-fitted by patient (each image's prior is built without its patient's fold).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import Progress

from cxrlens.data.cache import PreparedCache
from cxrlens.data.splits import split_by_patient
from cxrlens.data.torch_datasets import to_unit_float
from cxrlens.evaluate.classification import BINARY_METRICS, binary_report
from cxrlens.evaluate.localization import (BoxRule, compare, cross_fitted_priors, location_prior, score_all,
                                           summarise)
from cxrlens.evaluate.overlay import overlay
from cxrlens.explain.boxes import heatmap_to_boxes
from cxrlens.explain.cams import CAMExplainer
from cxrlens.models.pretrained import load_classifier

SPLITS = ("train", "val", "test", "all")


def select_split(cache: PreparedCache, split: str, seed: int = 0, use_official: bool = True,
                 val_fraction: float = 0.1, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(evaluated indices, training indices) among the cache's ready items, split by patient."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    ready = cache.ready_indices()
    if split == "all":
        return ready, np.array([], dtype=int)
    splits = split_by_patient(cache.items(), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                              use_official=use_official).as_dict()
    return np.intersect1d(splits[split], ready), np.intersect1d(splits["train"], ready)


@torch.no_grad()
def predict_cache(model: torch.nn.Module, cache: PreparedCache, indices: np.ndarray, mean: float, std: float,
                  batch_size: int = 32, device: str = "cpu") -> np.ndarray:
    """Sigmoid probabilities (N x K) for the cache items ``indices``."""
    model = model.to(device).eval()
    parts = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        images = torch.from_numpy(np.stack([np.array(cache.images[int(i)]) for i in chunk]))[:, None].to(device)
        parts.append(torch.sigmoid(model((to_unit_float(images) - mean) / std).float()).cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def evaluate_checkpoint(checkpoint: str | Path, cache_dir: str | Path, run_dir: str | Path, split: str = "test",
                        cam: str = "gradcam", rule: BoxRule = BoxRule(), resamples: int = 1000, seed: int = 0,
                        use_official_splits: bool = True, device: str = "cpu", batch_size: int = 32,
                        gallery: int = 12, refine: bool = False, max_boxed_images: int | None = None,
                        overwrite: bool = False) -> dict:
    """Evaluate ``checkpoint`` on ``split`` of ``cache_dir``; returns what ``metrics.json`` holds.

    ``max_boxed_images`` caps how many boxed images are localized (the first by index; for
    quick runs - Score-CAM costs one forward pass per channel per image).
    """
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").exists() and not overwrite:
        raise FileExistsError(f"{run_dir / 'metrics.json'}: exists; pass --overwrite to replace it")
    model, meta = load_classifier(checkpoint)
    if refine and meta["pcm"] is None:
        raise ValueError(f"{checkpoint}: has no PCM; train one with cxrlens refine")
    if not refine:
        meta["pcm"] = None
    cache = PreparedCache(cache_dir)
    shared = [name for name in cache.classes if name in meta["classes"]]
    if not shared:
        raise ValueError(f"{cache_dir}: none of its classes ({', '.join(cache.classes)}) is one the model predicts")
    indices, train_indices = select_split(cache, split, seed, use_official_splits)
    if not len(indices):
        raise ValueError(f"{cache_dir}: the {split} split is empty; try --split all or --no-official-splits")
    norm = meta["normalisation"]
    probabilities = predict_cache(model, cache, indices, norm["mean"], norm["std"], batch_size, device)
    model_column = {name: meta["classes"].index(name) for name in shared}
    cache_column = {name: cache.classes.index(name) for name in shared}
    classification = {}
    for name in shared:
        known = cache.masks[indices, cache_column[name]].astype(bool)
        labels = cache.labels[indices, cache_column[name]][known]
        if 0 < labels.sum() < labels.size:
            classification[name] = binary_report(labels, probabilities[known, model_column[name]], 0.5, resamples, seed)
        else:
            classification[name] = {"skipped": f"{int(labels.sum())} positives of {labels.size} known labels"}
    scored = [entry for entry in classification.values() if "skipped" not in entry]
    means = {metric: float(np.nanmean([entry[metric]["value"] for entry in scored])) if scored else float("nan")
             for metric in BINARY_METRICS}
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_predictions(run_dir / "predictions.csv", cache, indices, probabilities, meta["classes"])
    payload = {"checkpoint": str(checkpoint), "cache": str(cache_dir), "split": split, "images": int(len(indices)),
               "classes": meta["classes"], "cam": cam + (" + PCM" if refine else ""), "box_rule": {"rule": rule.rule, "threshold": rule.threshold},
               "classification": classification, "classification_mean": means,
               "localization": _localize(model, meta, cache, indices, train_indices, cam, rule, resamples, seed,
                                         device, run_dir, gallery, max_boxed_images)}
    (run_dir / "metrics.json").write_text(json.dumps(payload, indent=2))
    return payload


def _localize(model: torch.nn.Module, meta: dict, cache: PreparedCache, indices: np.ndarray,
              train_indices: np.ndarray, cam: str, rule: BoxRule, resamples: int, seed: int, device: str,
              run_dir: Path, gallery: int, max_boxed_images: int | None) -> dict | None:
    """CAM boxes vs radiologists' boxes for the evaluated images that have boxes; None when none do."""
    findings = meta["classes"]
    boxed = {int(i): [b for b in cache.boxes(int(i)) if b.finding in findings] for i in indices}
    boxed = dict(list({i: boxes for i, boxes in boxed.items() if boxes}.items())[:max_boxed_images])
    if not boxed:
        return None
    cases = [(i, f, [b for b in boxes if b.finding == f]) for i, boxes in boxed.items()
             for f in sorted({b.finding for b in boxes})]
    train_boxes = {int(i): cache.boxes(int(i)) for i in train_indices if cache.boxes(int(i))}
    if train_boxes:
        shared_prior = location_prior(train_boxes, cache.size, findings)
        priors = {i: shared_prior for i in boxed}
        prior_source = f"mean training box mask ({len(train_boxes)} training images with boxes)"
    else:
        groups = {i: cache.item(i).patient_id for i in boxed}
        priors = cross_fitted_priors(boxed, groups, cache.size, findings, seed=seed)
        prior_source = "mean box mask of the other patients' images, 5-fold cross-fitted by patient (no training boxes)"
    norm = meta["normalisation"]
    heatmaps: dict[tuple[int, str], np.ndarray] = {}
    order = sorted(boxed)
    model = model.to(device)
    refiner = meta["pcm"].to(device) if meta["pcm"] is not None else None
    with CAMExplainer(model, cam, refiner=refiner) as explainer, Progress(transient=True) as progress:
        task = progress.add_task(f"{cam} on {len(order)} boxed images", total=len(order))
        for start in range(0, len(order), 8):
            chunk = order[start:start + 8]
            images = torch.from_numpy(np.stack([np.array(cache.images[i]) for i in chunk]))[:, None].to(device)
            wanted = sorted({findings.index(b.finding) for i in chunk for b in boxed[i]})
            maps = explainer((to_unit_float(images) - norm["mean"]) / norm["std"], wanted).maps.cpu().numpy()
            for row, i in enumerate(chunk):
                for slot, column in enumerate(wanted):
                    if any(b.finding == findings[column] for b in boxed[i]):
                        heatmaps[(i, findings[column])] = maps[row, slot]
            progress.advance(task, len(chunk))
    model_records = score_all(cases, lambda i, f: heatmaps[(i, f)], rule)
    prior_records = score_all(cases, lambda i, f: priors[i][f], rule)
    with open(run_dir / "localization.jsonl", "w") as handle:
        for source, records in (("model", model_records), ("prior", prior_records)):
            for record in records:
                handle.write(json.dumps({"source": source, **record}) + "\n")
    _write_gallery(run_dir, cache, cases[:gallery], heatmaps, rule)
    return {"cases": len(cases), "boxes": sum(len(c[2]) for c in cases), "prior": prior_source,
            "model": summarise(model_records), "location_prior": summarise(prior_records),
            "comparison": compare(model_records, prior_records, resamples, seed)}


def _write_gallery(run_dir: Path, cache: PreparedCache, cases: list, heatmaps: dict, rule: BoxRule) -> None:
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


def _write_predictions(path: Path, cache: PreparedCache, indices: np.ndarray, probabilities: np.ndarray,
                       classes: list[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        label_names = [f"label:{name}" for name in cache.classes]
        writer.writerow(["index", "image", *(f"prob:{name}" for name in classes), *label_names])
        for row, index in enumerate(indices):
            labels = ["" if not known else int(value) for value, known in
                      zip(cache.labels[index], cache.masks[index].astype(bool))]
            writer.writerow([int(index), Path(cache.item(int(index)).path).name,
                             *(f"{p:.6f}" for p in probabilities[row]), *labels])
