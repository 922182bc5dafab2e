"""``cxrlens evaluate`` (:func:`evaluate`): a classifier checkpoint on a split of a prepared cache.

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

from cxrlens.config import EvaluateConfig
from cxrlens.data.cache import PreparedCache
from cxrlens.data.io import printable
from cxrlens.data.preprocess import normalise
from cxrlens.data.splits import split_by_patient
from cxrlens.devices import resolve_device
from cxrlens.evaluate.classification import BINARY_METRICS, binary_report
from cxrlens.evaluate.localization import compare, cross_fitted_priors, location_prior, score_all, summarise
from cxrlens.explain import METHODS, BoxRule, CAMExplainer, heatmap_to_boxes
from cxrlens.explain.overlay import overlay

EVALUATION_FILES = ("metrics.json", "predictions.csv", "localization.jsonl", "gallery.json", "report.html")
"""What an evaluation writes (besides its gallery's overlays); ``--overwrite`` replaces these and nothing else."""
from cxrlens.models.loading import LoadedClassifier, check_input, load_classifier
from cxrlens.folders import check_folder, claim_folder, remove_own


def select_split(cache: PreparedCache, split: str, seed: int = 0, use_official: bool = True,
                 val_fraction: float = 0.1, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(evaluated indices, training indices) among the cache's ready items, split by patient."""
    ready = cache.ready_indices()
    if split == "all":
        return ready, np.array([], dtype=int)
    splits = split_by_patient(cache.items(), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                              use_official=use_official).keep(ready)
    return splits.as_dict()[split], splits.train


@torch.no_grad()
def predict_cache(loaded: LoadedClassifier, cache: PreparedCache, indices: np.ndarray, batch_size: int = 32,
                  device: str = "cpu") -> np.ndarray:
    """Sigmoid probabilities (N x K) for the cache items ``indices``."""
    model = loaded.model.to(device).eval()
    parts = []
    for start in range(0, len(indices), batch_size):
        images = _cache_batch(cache, indices[start:start + batch_size], device)
        parts.append(torch.sigmoid(model(normalise(images, loaded.normalisation)).float()).cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def evaluate(checkpoint: str | Path, cache_dir: str | Path, run_dir: str | Path,
             config: EvaluateConfig = EvaluateConfig(), device: str = "auto", overwrite: bool = False) -> dict:
    """Evaluate ``checkpoint`` on ``config.split`` of ``cache_dir``; returns what ``metrics.json`` holds.

    ``config.max_boxed_images`` caps how many boxed images are localized (the first by
    index; for quick runs - Score-CAM costs one forward pass per channel per image).
    """
    run_dir = Path(run_dir)
    check_folder(run_dir, "evaluation", [cache_dir, checkpoint])
    if (run_dir / "metrics.json").exists() and not overwrite:
        raise FileExistsError(f"{run_dir / 'metrics.json'}: exists; pass --overwrite to replace it")
    METHODS.get(config.cam)  # an unknown method fails before any work
    rule = BoxRule.from_option(config.box_rule, config.threshold)
    device = resolve_device(device)
    loaded = load_classifier(checkpoint)
    if config.refine and loaded.refiner is None:
        raise ValueError(f"{checkpoint}: has no PCM; train one with cxrlens refine")
    cache = PreparedCache(cache_dir)
    check_input(loaded, cache, checkpoint)
    classes = loaded.classes
    shared = [name for name in cache.classes if name in classes]
    if not shared:
        raise ValueError(f"{cache_dir}: none of its classes ({', '.join(cache.classes)}) is one the model predicts")
    indices, train_indices = select_split(cache, config.split, config.seed, config.official_splits)
    if not len(indices):
        raise ValueError(f"{cache_dir}: the {config.split} split is empty; try --split all or --no-official-splits")
    probabilities = predict_cache(loaded, cache, indices, config.batch_size, device)
    model_column = {name: classes.index(name) for name in shared}
    cache_column = {name: cache.classes.index(name) for name in shared}
    classification = {}
    for name in shared:
        known = cache.masks[indices, cache_column[name]].astype(bool)
        labels = cache.labels[indices, cache_column[name]][known]
        if 0 < labels.sum() < labels.size:
            classification[name] = binary_report(labels, probabilities[known, model_column[name]], 0.5,
                                                 config.bootstrap, config.seed)
        else:
            classification[name] = {"skipped": f"{int(labels.sum())} positives of {labels.size} known labels"}
    scored = [entry for entry in classification.values() if "skipped" not in entry]
    means = {metric: float(np.nanmean([entry[metric]["value"] for entry in scored])) if scored else float("nan")
             for metric in BINARY_METRICS}
    claim_folder(run_dir, "evaluation", [cache_dir, checkpoint])
    remove_own(run_dir, [*EVALUATION_FILES, *(f"gallery/{name}" for name in _gallery_files(run_dir))])
    _write_predictions(run_dir / "predictions.csv", cache, indices, probabilities, classes)
    payload = {"checkpoint": str(checkpoint), "cache": str(cache_dir), "split": config.split,
               "images": int(len(indices)), "classes": classes, "cam": config.cam + (" + PCM" if config.refine else ""),
               "box_rule": {"rule": rule.rule, "threshold": rule.threshold},
               "classification": classification, "classification_mean": means,
               "localization": _localize(loaded, cache, indices, train_indices, config, rule, device, run_dir)}
    (run_dir / "metrics.json").write_text(json.dumps(payload, indent=2))
    return payload


def _cache_batch(cache: PreparedCache, indices: np.ndarray | list[int], device: str) -> torch.Tensor:
    """uint8 B x 1 x S x S pixels of the cache items ``indices``."""
    return torch.from_numpy(np.stack([np.array(cache.images[int(i)]) for i in indices]))[:, None].to(device)


def _localize(loaded: LoadedClassifier, cache: PreparedCache, indices: np.ndarray, train_indices: np.ndarray,
              config: EvaluateConfig, rule: BoxRule, device: str, run_dir: Path) -> dict | None:
    """CAM boxes vs radiologists' boxes for the evaluated images that have boxes; None when none do."""
    findings = loaded.classes
    seed = config.seed
    boxed = {int(i): [b for b in cache.boxes(int(i)) if b.finding in findings] for i in indices}
    boxed = dict(list({i: boxes for i, boxes in boxed.items() if boxes}.items())[:config.max_boxed_images])
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
    heatmaps: dict[tuple[int, str], np.ndarray] = {}
    order = sorted(boxed)
    model = loaded.model.to(device)
    refiner = loaded.refiner.to(device) if config.refine and loaded.refiner is not None else None
    with CAMExplainer(model, config.cam, refiner=refiner) as explainer, Progress(transient=True) as progress:
        task = progress.add_task(f"{config.cam} on {len(order)} boxed images", total=len(order))
        for start in range(0, len(order), 8):
            chunk = order[start:start + 8]
            images = normalise(_cache_batch(cache, chunk, device), loaded.normalisation)
            wanted = sorted({findings.index(b.finding) for i in chunk for b in boxed[i]})
            maps = explainer(images, wanted).maps.cpu().numpy()
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
    _write_gallery(run_dir, cache, cases[:config.gallery], heatmaps, rule)
    return {"cases": len(cases), "boxes": sum(len(c[2]) for c in cases), "prior": prior_source,
            "model": summarise(model_records), "location_prior": summarise(prior_records),
            "comparison": compare(model_records, prior_records, config.bootstrap, seed)}


def _gallery_files(run_dir: Path) -> list[str]:
    """The overlay files an earlier evaluation in ``run_dir`` listed (nothing when it listed none)."""
    try:
        entries = json.loads((run_dir / "gallery.json").read_text())
        return [Path(entry["file"]).name for entry in entries]
    except (OSError, ValueError, TypeError, KeyError):
        return []


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
            writer.writerow([int(index), printable(Path(cache.item(int(index)).path).name),
                             *(f"{p:.6f}" for p in probabilities[row]), *labels])
