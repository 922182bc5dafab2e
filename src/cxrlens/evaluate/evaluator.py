"""``cxrlens evaluate`` (:func:`evaluate`): a classifier checkpoint on a split of a prepared cache.

Writes to the evaluation folder:

* ``metrics.json`` - per-finding AUROC, AUPRC, ACC, SEN, SPE, F1 with bootstrap 95 % CIs
  (ACC to F1 at the checkpoint's operating threshold, chosen on its validation split;
  0.5 where it has none), their means, the findings that could not be
  scored, how the evaluated images relate to the model's own data, and for the images
  with radiologists' boxes the localization metrics of the model's heatmaps next to the
  image-blind location prior and prior-aware localization (heatmap x prior, compared with the prior
  alone; :mod:`cxrlens.evaluate.cam_localization`), the raw-pixel floor
  beside the model's AUROC (:mod:`cxrlens.evaluate.pixel_floor`) and the verdict of each claim
  (:mod:`cxrlens.evaluate.verdict`);
  ``model_cost`` holds the model's parameters and inference time (paper 003 Table 4);
* ``predictions.csv`` - every image's probabilities and labels (ROC / PR curves);
* ``localization.jsonl`` - every scored (image, finding) case: model, prior and heatmap x prior;
* ``gallery/*.png`` + ``gallery.json`` - overlays with true and predicted boxes.

Findings are matched through their canonical names (:mod:`cxrlens.data.labels`), so a
CheXpert-trained model's "Pleural Effusion" is scored on NIH's "Effusion".

**Leak guard.** Every classifier checkpoint records the images and patients it was
trained and validated on (:class:`cxrlens.checkpoints.DataProvenance`). Evaluated images
or patients that were in a supervised role (training, validation, SEAM refinement,
boxes of the CAM loss) are refused unless ``allow_train_overlap``; the overlap is then
recorded and the report says so in red. Overlap with self-supervised pretraining (pixels
only) is allowed, printed and recorded.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import torch

from cxrlens.config import EvaluateConfig
from cxrlens.data.cache import PreparedCache
from cxrlens.data.io import printable
from cxrlens.data.labels import ClassMatch, match_classes
from cxrlens.data.preprocess import normalise
from cxrlens.data.provenance import refuse_training_overlap
from cxrlens.data.roles import evaluated_indices
from cxrlens.data.splits import patients_of
from cxrlens.devices import resolve_device
from cxrlens.evaluate.cam_localization import cache_batch, gallery_files, localize
from cxrlens.evaluate.classification import BINARY_METRICS, binary_report
from cxrlens.evaluate.model_cost import model_cost
from cxrlens.evaluate.model_card import CARD_NAME, Evaluation, write_model_card
from cxrlens.evaluate.pixel_floor import FLOOR_SIDE, floor_comparison, known_labels, pixel_floor, training_images
from cxrlens.evaluate.stage_times import StageTimes
from cxrlens.evaluate.verdict import evaluation_claims
from cxrlens.explain import METHODS, BoxRule
from cxrlens.folders import check_folder, claim_folder, remove_own
from cxrlens.models.loading import LoadedClassifier, check_input, load_classifier
from cxrlens.tracking import remove_logs

EVALUATION_FILES = ("metrics.json", "predictions.csv", "localization.jsonl", "gallery.json", "report.html", CARD_NAME)
"""What an evaluation writes (besides its gallery's overlays); ``--overwrite`` replaces these and nothing else."""


@torch.no_grad()
def predict_cache(loaded: LoadedClassifier, cache: PreparedCache, indices: np.ndarray, batch_size: int = 32,
                  device: str = "cpu") -> np.ndarray:
    """Sigmoid probabilities (N x K) for the cache items ``indices``."""
    model = loaded.model.to(device).eval()
    parts = []
    for start in range(0, len(indices), batch_size):
        images = cache_batch(cache, indices[start:start + batch_size], device)
        parts.append(torch.sigmoid(model(normalise(images, loaded.normalisation)).float()).cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def evaluate(checkpoint: str | Path, cache_dir: str | Path, run_dir: str | Path,
             config: EvaluateConfig = EvaluateConfig(), device: str = "auto", overwrite: bool = False,
             weights_file: str | Path | None = None, compile: bool = False) -> dict:
    """Evaluate ``checkpoint`` on ``config.split`` of ``cache_dir``; returns what ``metrics.json`` holds.

    ``checkpoint`` may be ``xrv:<name>``, a TorchXRayVision model as published (``weights_file``: its file, where it
    is not in TorchXRayVision's cache folder); its training images are unknown, which ``origin`` says.

    ``compile`` runs the network through ``torch.compile`` (:func:`cxrlens.models.inference.inference_model`).

    ``config.max_boxed_images`` caps how many boxed images are localized (the first by
    index; for quick runs - Score-CAM costs one forward pass per channel per image).
    """
    stages = StageTimes()
    run_dir = Path(run_dir)
    check_folder(run_dir, "evaluation", [cache_dir, checkpoint])
    if (run_dir / "metrics.json").exists() and not overwrite:
        raise FileExistsError(f"{run_dir / 'metrics.json'}: exists; pass --overwrite to replace it")
    METHODS.get(config.cam)  # an unknown method fails before any work
    rule = BoxRule.from_option(config.box_rule, config.threshold)
    device = resolve_device(device)
    loaded = load_classifier(checkpoint, weights_file)
    if config.refine and loaded.refiner is None:
        raise ValueError(f"{checkpoint}: has no PCM; train one with cxrlens refine")
    cache = PreparedCache(cache_dir)
    check_input(loaded, cache, checkpoint)
    match = match_classes(loaded.classes, cache.classes)
    if not match.pairs:
        raise ValueError(f"{cache_dir}: none of its classes ({', '.join(cache.classes)}) is one the model predicts")
    items = cache.items()
    indices, train_indices, splits = evaluated_indices(items, cache.ready_indices(), config)
    if not len(indices):
        raise ValueError(f"{cache_dir}: the {config.split} split is empty; try --split all or --splits patient")
    overlaps = refuse_training_overlap(loaded.checkpoint.provenance, items, indices, str(cache_dir), checkpoint,
                                       config.allow_train_overlap, splits.released if splits else frozenset())
    with stages("inference model"):
        original, loaded = loaded.model, loaded.for_inference(device, compile)
    with stages("forward"):
        probabilities = predict_cache(loaded, cache, indices, config.batch_size, device)
    thresholds = {name: loaded.checkpoint.threshold(loaded.classes[column]) for name, column, _ in match.pairs}
    patients = patients_of(items, indices)  # the bootstraps resample whole patients
    with stages("classification metrics"):
        classification = _classification(match, cache, indices, patients, probabilities, thresholds, config)
    with stages("raw-pixel floor"):
        floor = _floor(loaded, match, cache, indices, patients, train_indices, probabilities, config)
    scored = [entry for entry in classification.values() if "skipped" not in entry]
    means = {metric: float(np.nanmean([entry[metric]["value"] for entry in scored])) if scored else float("nan")
             for metric in BINARY_METRICS}
    claim_folder(run_dir, "evaluation", [cache_dir, checkpoint])
    remove_own(run_dir, [*EVALUATION_FILES, *(f"gallery/{name}" for name in gallery_files(run_dir))])
    remove_logs(run_dir)  # an earlier evaluation's tracker logs
    _write_predictions(run_dir / "predictions.csv", cache, indices, probabilities, match)
    payload = {"checkpoint": str(checkpoint), "cache": str(cache_dir), "split": config.split,
               "splits": splits.summary(items) if splits else {"mode": "all"},
               "box_test_fraction": config.box_test_fraction,
               "origin": loaded.checkpoint.origin, "images": int(len(indices)), "classes": loaded.classes,
               "cam": config.cam + (" + PCM" if config.refine else ""),
               "normalize_maps": config.normalize_maps, "box_rule": {"rule": rule.rule, "threshold": rule.threshold},
               "unscored": {"model_only": list(match.model_only), "data_only": list(match.data_only)},
               "data_overlap": {"allowed": config.allow_train_overlap,
                                "roles": {entry.role: entry.to_dict() for entry in overlaps}},
               "thresholds": {"rule": loaded.checkpoint.threshold_rule or "none chosen (0.5)", "values": thresholds},
               "classification": classification, "classification_mean": means, "floor": floor,
               "localization": localize(loaded, match, cache, indices, train_indices, config, rule, device, run_dir,
                                        stages)}
    with stages("model cost"):
        payload["model_cost"] = model_cost(original, cache.size, device)  # the network as trained (paper 003 Table 4)
    payload["verdict"] = [claim.to_dict() for claim in evaluation_claims(payload)]
    payload["seconds"] = stages.summary()
    (run_dir / "metrics.json").write_text(json.dumps(payload, indent=2))
    write_model_card(checkpoint, run_dir / CARD_NAME, [Evaluation(run_dir, payload)], weights_file)
    return payload


def headline_metrics(payload: dict) -> dict[str, float]:
    """An evaluation's numbers for an experiment tracker: the mean classification metrics, and each verdict claim's
    difference with its CI bounds (names keep letters, digits and ``_ . / -``)."""
    values = {f"mean_{name}": value for name, value in payload["classification_mean"].items()}
    for claim in payload["verdict"]:
        if claim.get("difference"):
            name = re.sub(r"[^A-Za-z0-9_./-]+", "_", claim["claim"]).strip("_")
            values.update({f"{name}/{key}": claim["difference"][key] for key in ("value", "low", "high")})
    return {name: float(value) for name, value in values.items() if np.isfinite(value)}


def _classification(match: ClassMatch, cache: PreparedCache, indices: np.ndarray, patients: np.ndarray,
                    probabilities: np.ndarray, thresholds: dict[str, float], config: EvaluateConfig) -> dict[str, dict]:
    """Per shared finding (canonical name): the binary metrics with CIs (resampling whole patients) at the checkpoint's
    operating threshold, or why it was skipped."""
    results = {}
    for name, model_column, data_column in match.pairs:
        known = cache.masks[indices, data_column].astype(bool)
        labels = cache.labels[indices, data_column][known]
        if 0 < labels.sum() < labels.size:
            results[name] = {"threshold": thresholds[name], **binary_report(
                labels, probabilities[known, model_column], thresholds[name], config.bootstrap, config.seed,
                patients[known])}
        else:
            results[name] = {"skipped": f"{int(labels.sum())} positives of {labels.size} known labels"}
    return results


def _floor(loaded: LoadedClassifier, match: ClassMatch, cache: PreparedCache, indices: np.ndarray, patients: np.ndarray,
           train_indices: np.ndarray, probabilities: np.ndarray, config: EvaluateConfig) -> dict:
    """The raw-pixel floor (:mod:`cxrlens.evaluate.pixel_floor`) fitted on the model's training images and scored on
    ``indices``, beside the model: per finding and mean AUROC with the paired difference and its CI."""
    if not config.floor:
        return {"skipped": "not fitted (floor: false)"}
    parts, source = training_images(loaded.checkpoint.provenance, cache, train_indices, indices,
                                    config.floor_max_images, config.seed)
    if not parts:
        return {"source": source, "skipped": source}
    names = match.names
    labels, masks = known_labels([(cache, indices)], names)
    fitted, floor_scores, reused = pixel_floor(parts, (cache, indices), names, config.seed)
    model_scores = probabilities[:, [column for _, column, _ in match.pairs]]
    fits = {name: {"C": entry["C"], "train_images": entry["train_images"]} if "C" in entry else entry
            for name, entry in fitted.items()}
    return {"source": source, "side": FLOOR_SIDE, "fits": fits, "reused": reused,
            **floor_comparison(labels, masks, model_scores, floor_scores, names, config.bootstrap, config.seed,
                               patients)}


def read_predictions(run_dir: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """What :func:`_write_predictions` wrote: the cache indices, and by finding the probabilities and the labels (NaN
    where unknown)."""
    path = Path(run_dir) / "predictions.csv"
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror}); is {run_dir} a finished evaluation?") from None
    findings = [name[len("prob:"):] for name in (rows[0] if rows else {}) if name.startswith("prob:")]
    indices = np.array([int(row["index"]) for row in rows], dtype=np.int64)
    probabilities = {name: np.array([float(row[f"prob:{name}"]) for row in rows]) for name in findings}
    labels = {name: np.array([float(row[f"label:{name}"]) if row[f"label:{name}"] != "" else np.nan for row in rows])
              for name in findings}
    return indices, probabilities, labels


def _write_predictions(path: Path, cache: PreparedCache, indices: np.ndarray, probabilities: np.ndarray,
                       match: ClassMatch) -> None:
    """One row per image: the probability and label of every shared finding (canonical names)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "image", *(f"prob:{name}" for name in match.names),
                         *(f"label:{name}" for name in match.names)])
        for row, index in enumerate(indices):
            labels = ["" if not cache.masks[index, column] else int(cache.labels[index, column])
                      for _, _, column in match.pairs]
            writer.writerow([int(index), printable(Path(cache.item(int(index)).path).name),
                             *(f"{probabilities[row, column]:.6f}" for _, column, _ in match.pairs), *labels])
