"""The raw-pixel floor beside every classification result, and the verdict that opens the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from cxrlens.checkpoints import DataProvenance
from cxrlens.cli import app
from cxrlens.data.cache import FLOORS_FOLDER, PreparedCache, prepare_cache
from cxrlens.data.registry import open_sample
from cxrlens.evaluate.classification import (BINARY_METRICS, binary_metrics, binary_report, clusters_of, mean_auroc,
                                             paired_mean_auroc_difference, rank_auroc, resample_rows)
from cxrlens.evaluate.pixel_floor import FLOOR_SIDE, floor_comparison, pixel_features, training_images
from cxrlens.evaluate.verdict import Claim
from cxrlens.models import count_parameters
from cxrlens.models.loading import load_classifier

runner = CliRunner()


def test_rank_auroc_is_scikit_learns() -> None:
    rng = np.random.default_rng(0)
    for size in (7, 60, 500):
        labels = rng.integers(0, 2, size)
        labels[:2] = (0, 1)
        scores = np.round(rng.random(size), 1)  # many ties
        assert rank_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_binary_metrics_are_scikit_learns() -> None:
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score, recall_score

    rng = np.random.default_rng(3)
    for size in (5, 40, 300):
        labels = rng.integers(0, 2, size)
        labels[:2] = (0, 1)
        scores = np.round(rng.random(size), 1)  # ties
        for threshold in (0.0, 0.35, 0.5, 1.1):
            ours = binary_metrics(labels, scores, threshold)
            predicted = (scores >= threshold).astype(int)
            assert ours["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
            assert ours["auprc"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
            assert ours["acc"] == pytest.approx(accuracy_score(labels, predicted))
            assert ours["sen"] == pytest.approx(recall_score(labels, predicted))
            assert ours["spe"] == pytest.approx(recall_score(1 - labels, 1 - predicted))
            assert ours["f1"] == pytest.approx(f1_score(labels, predicted, zero_division=0.0))
    assert np.isnan(binary_metrics(np.ones(4), np.arange(4.0))["auc"])
    with pytest.raises(ValueError, match="finite"):
        binary_metrics(np.array([0, 1, 1]), np.array([0.2, np.nan, 0.9]))


def metrics_indices(run: Path) -> list[int]:
    """The cache indices an evaluation scored (its predictions.csv)."""
    return [int(line.split(",")[0]) for line in (run / "predictions.csv").read_text().splitlines()[1:]]


@pytest.mark.parametrize("patients", [False, True])
def test_bootstraps_counted_at_once_equal_the_draw_by_draw_loop(patients: bool) -> None:
    """binary_report and paired_mean_auroc_difference weigh rows by how often each draw picks them; their CIs must
    be exactly those of rescoring every resampled set of rows in turn (tied scores, rare positives, patients)."""
    rng = np.random.default_rng(3)
    labels = (rng.random((300, 3)) < [0.05, 0.3, 0.5]).astype(int)
    scores = np.round(rng.random((300, 3)) + 0.3 * labels, 1)  # rounded: many ties
    other = np.round(rng.random((300, 3)), 2)
    masks = rng.random((300, 3)) > 0.1
    groups = np.repeat(np.arange(100), 3) if patients else None
    clusters = clusters_of(groups)

    loop_rng, draws = np.random.default_rng(0), {name: [] for name in BINARY_METRICS}
    for _ in range(200):
        rows = resample_rows(300, loop_rng, clusters)
        for name, value in binary_metrics(labels[rows, 1], scores[rows, 1], 0.6).items():
            if np.isfinite(value):
                draws[name].append(value)
    report = binary_report(labels[:, 1], scores[:, 1], 0.6, resamples=200, seed=0, groups=groups)
    for name in BINARY_METRICS:
        assert report[name]["low"] == pytest.approx(np.percentile(draws[name], 2.5), abs=1e-12), name
        assert report[name]["high"] == pytest.approx(np.percentile(draws[name], 97.5), abs=1e-12), name

    loop_rng, differences = np.random.default_rng(0), []
    for _ in range(200):
        rows = resample_rows(300, loop_rng, clusters)
        differences.append(mean_auroc(scores[rows], labels[rows], masks[rows])
                           - mean_auroc(other[rows], labels[rows], masks[rows]))
    differences = np.array(differences)[np.isfinite(differences)]
    paired = paired_mean_auroc_difference(labels, masks, scores, other, resamples=200, seed=0, groups=groups)
    assert paired["low"] == pytest.approx(np.percentile(differences, 2.5), abs=1e-12)
    assert paired["high"] == pytest.approx(np.percentile(differences, 97.5), abs=1e-12)


def test_claims_pass_only_when_the_whole_ci_is_above_zero() -> None:
    assert Claim("a", {"value": 0.1, "low": 0.02, "high": 0.2}).status == "pass"
    nan = float("nan")
    assert Claim("a", {"value": 0.1, "low": nan, "high": nan}).to_dict()["untested"].startswith("no confidence")
    assert Claim("a", {"value": 0.1, "low": -0.01, "high": 0.2}).status == "not shown"
    assert Claim("a", {"value": -0.1, "low": -0.2, "high": -0.01}).status == "worse"
    assert Claim("a", None, "no boxes").to_dict()["status"] == "untested"


def test_floor_comparison_tells_a_better_model_from_a_worse_one() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (400, 2)).astype(float)
    masks = np.ones_like(labels, dtype=bool)
    informed = labels + rng.normal(0, 0.5, labels.shape)  # AUROC about 0.92
    weak = labels + rng.normal(0, 3.0, labels.shape)  # about 0.6
    better = floor_comparison(labels, masks, informed, weak, ["a", "b"], resamples=200)
    assert better["mean"]["difference"]["low"] > 0 and set(better["findings"]) == {"a", "b"}
    # resampling patients: 20 images per patient carry the information of one, so the interval widens
    patients = np.repeat(np.arange(20), 20)
    clustered = floor_comparison(labels, masks, informed, weak, ["a", "b"], resamples=200, patients=patients)
    width = {name: entry["mean"]["difference"]["high"] - entry["mean"]["difference"]["low"]
             for name, entry in (("image", better), ("patient", clustered))}
    assert clustered["mean"]["difference"]["value"] == better["mean"]["difference"]["value"]
    assert width["patient"] > width["image"] * 0.9
    # the same for every binary metric: 20 near-copies of 10 patients' images are 10 patients, not 200 images
    few = np.repeat(np.array([0, 1] * 5), 20)
    scores = few + np.repeat(rng.normal(0, 1.0, 10), 20) + rng.normal(0, 0.05, few.size)  # a patient's images agree
    by_image = binary_report(few, scores, resamples=300)
    by_patient = binary_report(few, scores, resamples=300, groups=np.repeat(np.arange(10), 20))
    assert by_patient["auc"]["value"] == by_image["auc"]["value"]
    assert (by_patient["auc"]["high"] - by_patient["auc"]["low"]) > 1.5 * (by_image["auc"]["high"] - by_image["auc"]["low"])
    worse = floor_comparison(labels, masks, weak, informed, ["a", "b"], resamples=200)
    assert worse["mean"]["difference"]["high"] < 0


def test_linear_eval_reports_the_floor_on_real_kermany_images(tmp_path: Path, data_root: Path) -> None:
    cache = prepare_cache(open_sample(data_root, ["kermany"]), tmp_path / "kermany", size=64, workers=2)
    assert pixel_features(cache, [0, 1]).shape == (2, FLOOR_SIDE * FLOOR_SIDE)
    result = runner.invoke(app, ["linear-eval", "--random-init", "resnet18", "--cache", str(cache.directory),
                                 "--run", str(tmp_path / "le"), "--fractions", "0.1,1", "--bootstrap", "100",
                                 "--folds", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "le" / "metrics.json").read_text())
    floors = metrics["floor"]
    assert set(floors) == {"0.1", "1"}
    # raw pixels already separate pediatric pneumonia from normal well (the issue measured about 0.91 held out)
    assert floors["1"]["mean"]["floor"] > 0.8
    assert floors["1"]["mean"]["model"] == pytest.approx(metrics["mean_auc"]["1"], abs=1e-9)
    assert [claim["claim"] for claim in metrics["verdict"]] == [
        "probe > raw-pixel floor (mean AUROC, 0.1 of the labels)", "probe > raw-pixel floor (mean AUROC, 1 of the labels)",
        "pretrained probe > random-init probe (mean AUROC)"]
    assert metrics["verdict"][-1]["untested"] == "a random-init encoder itself"
    assert "raw-pixel floor" in result.output


def test_evaluate_fits_the_floor_on_the_models_own_training_images(tmp_path: Path, tiny_classifier: Path,
                                                                   data_root: Path) -> None:
    from cxrlens.checkpoints import ClassifierCheckpoint, load_checkpoint

    provenance = load_checkpoint(tiny_classifier, ClassifierCheckpoint).provenance
    cache = PreparedCache(provenance[0].cache)
    result = runner.invoke(app, ["evaluate", str(tiny_classifier), "--cache", str(cache.directory), "--run",
                                 str(tmp_path / "eval"), "--bootstrap", "100", "--gallery", "0"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    floor = metrics["floor"]
    trained = len(provenance[0].images["train"])
    assert floor["source"].startswith(f"{trained} of the model's {trained} recorded training images")
    assert floor["reused"] is False and len(list((cache.directory / FLOORS_FOLDER).glob("*.npz"))) >= 1
    again = runner.invoke(app, ["evaluate", str(tiny_classifier), "--cache", str(cache.directory), "--run",
                                str(tmp_path / "again"), "--bootstrap", "100", "--gallery", "0"])
    assert again.exit_code == 0, again.output
    reused = json.loads((tmp_path / "again" / "metrics.json").read_text())["floor"]
    assert reused.pop("reused") is True  # fitted once: the second evaluation of these images reads it back
    assert reused == {key: value for key, value in floor.items() if key != "reused"}
    assert floor["mean"]["model"] == pytest.approx(np.mean([floor["findings"][name]["model"]
                                                            for name in floor["findings"]]))
    assert [claim["claim"] for claim in metrics["verdict"]][0] == "model > raw-pixel floor (mean AUROC)"
    page = (tmp_path / "eval" / "report.html").read_text()
    assert page.index("<h2>Verdict</h2>") < page.index("<h2>Data</h2>") and "Against the raw-pixel floor" in page
    # the evaluation's model card: front matter a hub reads, the floor beside the AUROC, limitations from the facts
    card = (tmp_path / "eval" / "model_card.md").read_text()
    matter = yaml.safe_load(card.split("---")[1])
    assert matter["library_name"] == "cxrlens" and matter["model-index"][0]["results"][0]["metrics"][0]["value"] == \
        pytest.approx(metrics["classification_mean"]["auc"], abs=1e-4)
    mean = floor["mean"]
    assert f"| **mean** | {mean['model']:.3f} | {mean['floor']:.3f} | {mean['difference']['value']:.3f}" in card
    assert f"Trained on {trained} images at 64 px on a CPU" in card and "not a medical device" in card
    assert f"| Parameters | {count_parameters(load_classifier(tiny_classifier).model):,} |" in card
    assert 'href="model_card.md"' in page
    assert "model &gt; raw-pixel floor" in page and "raw-pixel floor" in result.output
    scored = np.array(metrics_indices(tmp_path / "eval"))
    # the scored cache is searched whatever path the provenance recorded (a moved cache still finds the images)
    moved = [entry.model_copy(update={"cache": str(tmp_path / "gone")}) for entry in provenance]
    parts, source = training_images(moved, cache, np.arange(10), scored)
    assert sum(len(indices) for _, indices in parts) == trained and f"{trained} of the model's {trained}" in source
    # without them, this cache's training split - never a scored patient's image
    unknown = [DataProvenance(cache="x", dataset="d", fingerprint="f", images={"train": ["0" * 16]})]
    parts, source = training_images(unknown, cache, np.union1d(np.arange(10), scored[:5]), scored)
    items = cache.items()
    assert "training split" in source and not ({items[int(i)].patient for i in parts[0][1]}
                                              & {items[int(i)].patient for i in scored})
    parts, source = training_images(provenance, cache, np.arange(10), scored, limit=50, seed=1)
    assert sum(len(indices) for _, indices in parts) == 50 and "50 of them drawn" in source
    assert training_images(unknown, cache, scored, scored)[0] == []  # a floor on the scored images: none at all
    skipped = runner.invoke(app, ["evaluate", str(tiny_classifier), "--cache", str(cache.directory), "--run",
                                  str(tmp_path / "quick"), "--bootstrap", "20", "--gallery", "0", "--no-floor"])
    assert skipped.exit_code == 0 and json.loads((tmp_path / "quick" / "metrics.json").read_text())["verdict"][0][
        "status"] == "untested"


def test_probes_fitted_in_threads_equal_one_after_another(monkeypatch: pytest.MonkeyPatch) -> None:
    from cxrlens.config import LinearEvalConfig
    from cxrlens.evaluate import probe

    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(120, 16)), rng.integers(0, 2, (120, 5)).astype(np.float32)
    features[:, 0] += 2 * labels[:, 0]
    masks = rng.random((120, 5)) > 0.1
    config = LinearEvalConfig(c_grid=(0.01, 1.0), folds=3, bootstrap=20, floor=False)
    arguments = (features[:80], labels[:80], masks[:80], features[80:], labels[80:], masks[80:], list("abcde"), config)
    monkeypatch.setattr(probe, "usable_cores", lambda: 4)
    threaded = probe.linear_eval(*arguments)
    monkeypatch.setattr(probe, "usable_cores", lambda: 1)
    alone = probe.linear_eval(*arguments)
    assert threaded[0] == alone[0]
    np.testing.assert_array_equal(threaded[1], alone[1])


def test_a_damaged_stored_floor_is_removed_and_fitted_again(tmp_path: Path) -> None:
    from cxrlens.evaluate.pixel_floor import _read_floor, _write_floor

    path = tmp_path / "floors" / "digest.npz"
    _write_floor(path, {"a": {"C": 0.1}}, np.array([[0.25]]))
    fits, scores = _read_floor(path)
    assert fits == {"a": {"C": 0.1}} and scores.tolist() == [[0.25]] and [p.name for p in path.parent.iterdir()] == [
        "digest.npz"]  # no temporary file left behind
    for damaged in (path.read_bytes()[:40], b""):  # cut short by a crash, or empty
        path.write_bytes(damaged)
        assert _read_floor(path) is None and not path.exists()
