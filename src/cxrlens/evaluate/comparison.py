"""Two evaluations of the same images, compared paired: the cross-run rows of the verdict.

A paper's claim is often "method A beats method B" (SSL-pretrained > random init, CAM loss > no
CAM loss, MultiRes > standard, refined > unrefined). Two ``cxrlens evaluate`` folders that scored
the same images of the same cache are read back (``predictions.csv``, ``localization.jsonl``) and
compared on exactly those images: the mean AUROC difference over the findings both score, with a
paired bootstrap 95 % CI resampling whole patients; and, where both localized the same
(image, finding) cases, the IoU and acc@0.5 differences of their heatmaps (paired bootstrap over
cases within findings, as against the location prior; the baseline's entries are named ``baseline``).
Two evaluations of one classifier (a PCM refines heatmaps, not probabilities) leave the AUROC row
untested rather than a zero difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cxrlens.data.cache import PreparedCache
from cxrlens.data.splits import patients_of
from cxrlens.evaluate.classification import paired_mean_auroc_difference
from cxrlens.evaluate.evaluator import read_predictions
from cxrlens.evaluate.localization import compare
from cxrlens.evaluate.verdict import Claim


def _heatmap_records(folder: Path) -> list[dict]:
    path = folder / "localization.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [record for record in records if record.get("source") == "model"]


def evaluated_cache(model: str | Path, baseline: str | Path) -> Path:
    """The cache both evaluations scored (from their ``metrics.json``); ValueError when they scored different ones."""
    caches = []
    for folder in (Path(model), Path(baseline)):
        try:
            caches.append(Path(json.loads((folder / "metrics.json").read_text())["cache"]))
        except (OSError, ValueError, KeyError, TypeError):
            raise ValueError(f"{folder}: no metrics.json of cxrlens evaluate naming its cache") from None
    if caches[0].resolve() != caches[1].resolve():
        raise ValueError(f"{model} scored {caches[0]} and {baseline} scored {caches[1]}: compare evaluations of the "
                         "same cache")
    return caches[0]


def compare_evaluations(model: str | Path, baseline: str | Path, cache_dir: str | Path, claim: str,
                        resamples: int = 1000, seed: int = 0) -> dict:
    """``claim`` (e.g. "MultiRes > standard") tested on two evaluations of the same images of ``cache_dir``: mean
    AUROC, heatmap IoU and acc@0.5, each model - baseline with a paired bootstrap 95 % CI and a verdict row."""
    model, baseline = Path(model), Path(baseline)
    indices, probabilities, labels = read_predictions(model)
    other_indices, other_probabilities, _ = read_predictions(baseline)
    if not np.array_equal(indices, other_indices):
        raise ValueError(f"{model} and {baseline} scored different images ({len(indices)} and {len(other_indices)}); "
                         "compare evaluations of the same split of the same cache")
    findings = [name for name in probabilities if name in other_probabilities]
    patients = patients_of(PreparedCache(cache_dir).items(), indices)
    result: dict = {"model": str(model), "baseline": str(baseline), "claim": claim, "images": int(len(indices)),
                    "findings": findings}
    scores = [np.column_stack([table[name] for name in findings]) if findings else None
              for table in (probabilities, other_probabilities)]
    same_classifier = bool(findings) and np.array_equal(scores[0], scores[1])
    if findings and not same_classifier:
        known = np.column_stack([np.isfinite(labels[name]) for name in findings])
        truth = np.nan_to_num(np.column_stack([labels[name] for name in findings]))
        result["auroc"] = paired_mean_auroc_difference(truth, known, scores[0], scores[1], resamples, seed, patients)
    records, other_records = _heatmap_records(model), _heatmap_records(baseline)
    same_cases = [(r["image"], r["finding"]) for r in records] == [(r["image"], r["finding"]) for r in other_records]
    if records and same_cases:
        result["localization"] = {metric: {("baseline" if key == "prior" else key): value for key, value in entry.items()}
                                  for metric, entry in compare(records, other_records, resamples, seed).items()}
    untested = ("no finding scored by both" if not findings else "the same probabilities (one classifier: a PCM "
                "refines its heatmaps only)" if same_classifier else "")
    claims = [Claim(f"{claim} (mean AUROC)", result.get("auroc"), untested)]
    for metric in ("iou", "acc@0.5"):
        entry = result.get("localization", {}).get(metric)
        claims.append(Claim(f"{claim} ({metric})", entry["difference"] if entry else None,
                            "" if entry else "the two evaluations did not localize the same boxed cases"))
    result["verdict"] = [entry.to_dict() for entry in claims]
    return result
