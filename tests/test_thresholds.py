"""Operating thresholds: chosen on the validation split, stored in the checkpoint, used by evaluate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cxrlens.checkpoints import ClassifierCheckpoint, load_checkpoint
from cxrlens.cli import app
from cxrlens.evaluate.classification import binary_metrics
from cxrlens.evaluate.thresholds import operating_threshold, operating_thresholds

runner = CliRunner()


def test_each_rule_picks_its_operating_point() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    scores = np.concatenate([rng.normal(0.3, 0.1, 200), rng.normal(0.6, 0.1, 200)])
    youden = operating_threshold(labels, scores)
    assert 0.4 < youden < 0.5  # between the two bumps, where sensitivity + specificity peaks
    j = [binary_metrics(labels, scores, cut)["sen"] + binary_metrics(labels, scores, cut)["spe"] for cut in scores]
    assert binary_metrics(labels, scores, youden)["sen"] + binary_metrics(labels, scores, youden)["spe"] == max(j)
    screening = operating_threshold(labels, scores, "sensitivity", 0.99)
    assert binary_metrics(labels, scores, screening)["sen"] >= 0.99 and screening < youden
    assert binary_metrics(labels, scores, np.nextafter(screening, 1))["sen"] < 0.99  # the highest such cut
    f1 = operating_threshold(labels, scores, "max-f1")
    assert binary_metrics(labels, scores, f1)["f1"] == pytest.approx(max(binary_metrics(labels, scores, c)["f1"]
                                                                         for c in scores))
    # the exact target point counts even inside a run of positives (a review found roc_curve's dropped points)
    few = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.05, *np.linspace(0.6, 0.99, 9)])
    truth = np.array([0] * 5 + [1] * 10)
    assert operating_threshold(truth, few, "sensitivity", 0.5) == pytest.approx(np.sort(few[truth == 1])[-5])
    rng = np.random.default_rng(3)
    for _ in range(20):
        y, p = rng.integers(0, 2, 200), rng.random(200)
        cut = operating_threshold(y, p, "sensitivity", 0.9)
        assert cut == max(c for c in p if binary_metrics(y, p, c)["sen"] >= 0.9)
    assert operating_threshold(np.array([0, 1, 1]), np.array([0.1, np.nan, 0.9])) == pytest.approx(0.9)  # NaN left out
    assert operating_threshold(np.ones(5), np.arange(5.0)) is None
    with pytest.raises(ValueError, match="unknown threshold rule"):
        operating_threshold(labels, scores, "coin")
    masks = np.ones((400, 2), bool)
    masks[:, 1] = False  # a class with no known label gets no threshold
    chosen = operating_thresholds(np.stack([scores, scores], 1), np.stack([labels, labels], 1), masks, ["a", "b"])
    assert chosen == {"a": youden}


def test_training_stores_them_and_evaluate_decides_with_them(tiny_classifier: Path, tmp_path: Path) -> None:
    checkpoint = load_checkpoint(tiny_classifier, ClassifierCheckpoint)
    assert checkpoint.threshold_rule == "youden" and checkpoint.thresholds
    assert set(checkpoint.thresholds) <= set(checkpoint.classes)
    cache = checkpoint.provenance[0].cache
    result = runner.invoke(app, ["evaluate", str(tiny_classifier), "--cache", cache, "--run", str(tmp_path / "e"),
                                 "--bootstrap", "20", "--gallery", "0", "--no-floor"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["thresholds"]["rule"] == "youden"
    with open(tmp_path / "e" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    checked = 0
    for name, entry in metrics["classification"].items():
        if "skipped" in entry:
            continue
        assert entry["threshold"] == pytest.approx(checkpoint.threshold(name))
        known = [row for row in rows if row[f"label:{name}"] != ""]
        labels = np.array([int(row[f"label:{name}"]) for row in known])
        scores = np.array([float(row[f"prob:{name}"]) for row in known])
        expected = binary_metrics(labels, scores, entry["threshold"])
        assert entry["sen"]["value"] == pytest.approx(expected["sen"], abs=1e-5)
        assert entry["spe"]["value"] == pytest.approx(expected["spe"], abs=1e-5)
        checked += 1
    assert checked >= 5
    page = (tmp_path / "e" / "report.html").read_text()
    assert "operating threshold, chosen on the model&#x27;s validation split (youden)" in page or \
        "operating threshold, chosen on the model's validation split (youden)" in page
