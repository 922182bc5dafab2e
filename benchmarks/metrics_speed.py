"""Bootstrap speed of evaluate's metrics against scikit-learn / record-by-record references, same process.

* Classification: :func:`cxrlens.evaluate.classification.binary_report` (AUROC, AUPRC, ACC,
  SEN, SPE, F1 counted in numpy) against the same percentile bootstrap calling
  scikit-learn's ``roc_auc_score``, ``average_precision_score``, ``confusion_matrix`` and
  ``f1_score`` (what evaluate did before), 14 findings x 532 images, patients resampled.
* Localization: :func:`cxrlens.evaluate.localization.compare` (cases x metrics arrays)
  against resampling the records and calling ``summarise`` on each resample.

Both pairs give the same numbers (the tests check it); this prints their times and ratio.

    python benchmarks/metrics_speed.py [--resamples 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, f1_score, roc_auc_score

from cxrlens.evaluate.classification import binary_report, clusters_of, resample_rows
from cxrlens.evaluate.localization import compare, summarise


def _sklearn_report(labels: np.ndarray, scores: np.ndarray, resamples: int, groups: np.ndarray) -> None:
    rng, clusters = np.random.default_rng(0), clusters_of(groups)
    for _ in range(resamples):
        rows = resample_rows(labels.size, rng, clusters)
        y, s = labels[rows], scores[rows]
        predicted = (s >= 0.5).astype(int)
        confusion_matrix(y, predicted, labels=[0, 1])
        f1_score(y, predicted, zero_division=0.0)
        if 0 < y.sum() < y.size:
            roc_auc_score(y, s), average_precision_score(y, s)


def _records(rng: np.random.Generator, cases: int) -> list[dict]:
    thresholds = ("0.1", "0.25", "0.5", "0.75")
    return [{"image": case, "finding": f"F{case % 8}", "predicted": 1, "dice": float(rng.random()),
             "boxes": [{"iou": float(rng.random()), "hit": {t: bool(rng.random() < 0.5) for t in thresholds}}],
             "false_positives": {t: int(rng.integers(0, 3)) for t in thresholds}} for case in range(cases)]


def _record_compare(model: list[dict], prior: list[dict], resamples: int) -> None:
    rng = np.random.default_rng(0)
    groups = [np.array([i for i, r in enumerate(model) if r["finding"] == f]) for f in sorted({r["finding"] for r in model})]
    for _ in range(resamples):
        chosen = np.concatenate([rng.choice(index, size=len(index)) for index in groups])
        summarise([model[i] for i in chosen]), summarise([prior[i] for i in chosen])


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resamples", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (532, 14))
    scores = np.clip(labels * 0.2 + rng.random((532, 14)), 0, 1)
    groups = rng.integers(0, 436, 532)
    ours = _timed(lambda: [binary_report(labels[:, k], scores[:, k], 0.5, args.resamples, 0, groups) for k in range(14)])
    reference = _timed(lambda: [_sklearn_report(labels[:, k], scores[:, k], args.resamples, groups) for k in range(14)])
    print(f"classification bootstrap, 14 findings x {args.resamples} resamples: cxrlens {ours:.2f} s, "
          f"scikit-learn calls {reference:.2f} s: {reference / ours:.1f}x")
    model, prior = _records(rng, 600), _records(rng, 600)
    ours = _timed(lambda: compare(model, prior, args.resamples))
    reference = _timed(lambda: _record_compare(model, prior, args.resamples))
    print(f"localization bootstrap, 600 cases x {args.resamples} resamples: cxrlens {ours:.2f} s, "
          f"record by record {reference:.2f} s: {reference / ours:.1f}x")


if __name__ == "__main__":
    main()
