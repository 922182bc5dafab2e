"""Linear evaluation of a frozen encoder (paper 002).

Features are the global average pool of the encoder's last feature map. For every class
(one-vs-rest for multi-label sets), a scikit-learn logistic regression with class
weights inversely proportional to the class frequencies (``class_weight="balanced"``)
is fitted; C is chosen from paper 002's grid {0.01, 0.05, 0.1, 0.2, 0.5, 1} by AUC in a
stratified k-fold grid search on the training split. The test split is scored with ACC,
AUC, SEN, SPE, F1 (and AUPRC) with bootstrap 95 % CIs, for each label fraction of the
training split (paper 002 uses all labels; label fractions such as 1 / 10 / 100 % are
patient-level, stratified and nested). The test images are checked against the encoder's
provenance: those whose boxes trained a CAM loss are refused, pretraining overlap (pixels
only) is recorded in ``metrics.json``. Features are
standardised before the regression by default (``standardize``; paper 002 keeps
scikit-learn's defaults otherwise).

:func:`run_linear_eval` is ``cxrlens linear-eval``: encoder checkpoint (or a random-init
baseline) + cache -> ``metrics.json`` / ``metrics.csv`` in a run folder, and
``test_scores.npz`` (the test images' probabilities per fraction) for paired comparisons
of encoders on the same test images (:func:`cxrlens.evaluate.classification.paired_mean_auroc_difference`).
Beside the probe, ``metrics.json`` holds the raw-pixel floor fitted on the same labelled images
(``floor``) and, for a pretrained encoder, the same probe on a random-init copy of its network
(``random_init``, ``random_init_baseline``; its features are extracted a second time), each as a
paired difference per label fraction, and the verdict rows they test. With ``by_epoch`` and
``gradcam_images`` it also draws paper 002's Figs. 2-4 (:mod:`cxrlens.evaluate.pretraining_epochs`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from cxrlens.config import LinearEvalConfig, ModelConfig, Normalisation
from cxrlens.data.cache import PreparedCache
from cxrlens.data.provenance import refuse_training_overlap
from cxrlens.data.roles import linear_eval_splits
from cxrlens.data.splits import patients_of
from cxrlens.devices import resolve_device
from cxrlens.evaluate.classification import BINARY_METRICS
from cxrlens.evaluate.frozen_features import extract_features, linear_eval_fractions, probe_fractions
from cxrlens.evaluate.pixel_floor import floor_comparison, fraction_floors
from cxrlens.evaluate.pretraining_epochs import probe_gradcam, probe_snapshots, snapshot_files
from cxrlens.evaluate.verdict import linear_eval_claims
from cxrlens.models import Backbone, load_encoder
from cxrlens.folders import check_folder, claim_folder


def random_init_comparison(network: ModelConfig, normalisation: Normalisation, cache: PreparedCache,
                           train: np.ndarray, test: np.ndarray, probe_scores: dict[str, np.ndarray],
                           config: LinearEvalConfig, device: str | torch.device = "cpu") -> dict[str, dict]:
    """Per label fraction: the same probe (same images, fractions and C grid) on a random-init ``network`` seeded with
    ``config.seed``, its mean AUC, and pretrained - random init per class and on average with paired bootstrap CIs
    resampling whole patients (papers 001, 002 measure what pretraining adds over random init)."""
    torch.manual_seed(config.seed)
    results, scores = linear_eval_fractions(Backbone(network.backbone, in_chans=network.in_chans), normalisation,
                                            cache, train, test, config, device)
    patients = patients_of(cache.items(), test)
    means = summarise(results)
    return {key: {"mean_auc": means[key], **floor_comparison(cache.labels[test], cache.masks[test], probe_scores[key],
                                                            scores[key], list(cache.classes), config.bootstrap,
                                                            config.seed, patients, baseline="random_init")}
            for key in scores}


def summarise(results: dict[str, dict], metric: str = "auc") -> dict[str, float]:
    """Mean of ``metric`` over the scored classes, per fraction."""
    summary = {}
    for fraction, per_class in results.items():
        values = [entry[metric]["value"] for entry in per_class.values() if metric in entry]
        summary[fraction] = float(np.nanmean(values)) if values else float("nan")
    return summary


def run_linear_eval(cache_dir: str | Path, run_dir: str | Path, encoder: str | Path | None, config: LinearEvalConfig,
                    backbone: str = "resnet50", device: str = "auto", overwrite: bool = False) -> dict:
    """Linear evaluation of ``encoder`` (a pretraining checkpoint; None: random-init ``backbone``) on a cache.

    The test split is the official one where the set has it (``config.splits``: as released, or patient-disjoint),
    else ``test_fraction`` of the patients; the rest is the training split the label fractions are drawn from.
    """
    run_dir = Path(run_dir)
    inputs = [cache_dir, *([encoder] if encoder else [])]
    check_folder(run_dir, "linear-eval", inputs)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists() and not overwrite:
        raise FileExistsError(f"{metrics_path}: exists; pass --overwrite to replace it")
    cache = PreparedCache(cache_dir)
    items = cache.items()
    splits = linear_eval_splits(items, cache.ready_indices(), config)
    train = np.union1d(splits.train, splits.val)
    test = splits.test
    if not len(train) or not len(test):
        raise ValueError(f"{cache_dir}: empty training ({len(train)}) or test ({len(test)}) split; a set that is all "
                         "in one official list (NIH's boxed images are all in test_list.txt) needs other images beside")
    device = resolve_device(device)
    torch.manual_seed(config.seed)  # a random-init baseline is seeded
    if encoder is None:
        network, normalisation, provenance = Backbone(backbone), Normalisation(), []
    else:
        network, checkpoint = load_encoder(encoder)
        normalisation, provenance = checkpoint.normalisation, checkpoint.provenance
    overlaps = refuse_training_overlap(provenance, items, test, str(cache_dir), encoder, config.allow_train_overlap,
                                       splits.released)
    train_features, test_features = (extract_features(network, normalisation, cache, indices, config.batch_size,
                                                      device) for indices in (train, test))
    results, scores = probe_fractions(train_features, test_features, cache, train, test, config)
    floor = (fraction_floors(cache, train, test, scores, config) if config.floor
             else {"skipped": "not fitted (floor: false)"})
    if encoder is None or not config.random_init_baseline:
        random_init = {"skipped": "a random-init encoder itself" if encoder is None else "not fitted "
                       "(random_init_baseline: false)"}
    else:
        random_init = random_init_comparison(checkpoint.encoder, normalisation, cache, train, test, scores, config,
                                             device)
    payload = {"cache": str(cache_dir), "encoder": str(encoder) if encoder else f"random-init {backbone}",
               "train_images": len(train), "test_images": len(test), "splits": splits.summary(items),
               "config": config.model_dump(mode="json"),
               "data_overlap": {"allowed": config.allow_train_overlap,
                                "roles": {entry.role: entry.to_dict() for entry in overlaps}},
               "mean_auc": summarise(results), "results": results, "floor": floor, "random_init": random_init}
    payload["verdict"] = [claim.to_dict() for claim in linear_eval_claims(payload)]
    claim_folder(run_dir, "linear-eval", inputs)
    if config.by_epoch:
        payload["by_epoch"] = (probe_snapshots(snapshot_files(encoder), cache, train, test, config, run_dir, device)
                               if encoder is not None else {"skipped": "a random-init encoder has no pretraining"})
    if config.gradcam_images:
        payload["gradcam"] = probe_gradcam(network, normalisation, cache, (train, test),
                                           (train_features, test_features), config, run_dir, device)
    metrics_path.write_text(json.dumps(payload, indent=2))
    _write_csv(run_dir / "metrics.csv", results)
    np.savez_compressed(run_dir / "test_scores.npz", test_indices=np.asarray(test),
                        **{f"fraction_{fraction}": values for fraction, values in scores.items()})
    return payload


def _write_csv(path: Path, results: dict[str, dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["fraction", "class", "C", *(f"{m}{part}" for m in BINARY_METRICS for part in ("", "_low", "_high"))])
        for fraction, per_class in results.items():
            for name, entry in per_class.items():
                if "skipped" in entry:
                    continue
                values = [entry[m][key] for m in BINARY_METRICS for key in ("value", "low", "high")]
                writer.writerow([fraction, name, entry["C"], *(f"{v:.4f}" for v in values)])
