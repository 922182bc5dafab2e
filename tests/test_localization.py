"""Localization metrics by hand, the location prior, and the evaluate -> report chain on the
real NIH images with radiologist boxes (rendered in headless Chromium)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cxrlens.cli import app
from cxrlens.data.boxes import Box, iobb
from cxrlens.data.cache import prepare_cache
from cxrlens.data.registry import open_sample
from cxrlens.evaluate.localization import (compare, continuous_dice, cross_fitted_priors, location_prior,
                                           prior_weighted, score_pair, summarise)
from cxrlens.explain import BoxRule
from browser import CHROMIUM, open_page

runner = CliRunner()


def test_iobb_iou_accuracy_and_false_positives_by_hand() -> None:
    truth = Box("Mass", 10, 10, 20, 20)
    assert iobb(truth, Box("", 20, 20, 20, 20)) == pytest.approx(100 / 400)
    assert iobb(truth, Box("", 12, 12, 4, 4)) == 1.0  # inside the truth: all of the predicted box overlaps
    heatmap = np.zeros((64, 64))
    heatmap[20:40, 20:40] = 1.0   # predicted box (20, 20, 20, 20): IoU 100/700, IoBB 100/400
    heatmap[50:60, 50:60] = 0.9   # a second box far away: a false positive at every T
    record = score_pair(heatmap, [truth], BoxRule("relative", 0.7))
    assert record["predicted"] == 2
    assert record["boxes"][0]["iou"] == pytest.approx(100 / 700)
    assert record["boxes"][0]["hit"] == {"0.1": True, "0.25": False, "0.5": False, "0.75": False}
    assert record["false_positives"] == {"0.1": 1, "0.25": 2, "0.5": 2, "0.75": 2}
    s = heatmap.clip(0, 1)
    g = np.zeros((64, 64))
    g[10:30, 10:30] = 1
    assert record["dice"] == pytest.approx(2 * (s * g).sum() / ((s * s).sum() + (g * g).sum()))
    assert continuous_dice(g, g) == 1.0 and continuous_dice(np.zeros((4, 4)), np.zeros((4, 4))) == 0.0


def test_summary_means_over_findings_and_paired_comparison() -> None:
    def record(image: int, finding: str, iou: float) -> dict:
        hit = {t: iou > 0.3 for t in ("0.1", "0.25", "0.5", "0.75")}
        return {"image": image, "finding": finding, "boxes": [{"iou": iou, "hit": hit}], "predicted": 1,
                "false_positives": {t: 0 for t in hit}, "dice": iou}

    model = [record(0, "A", 0.6), record(1, "A", 0.4), record(2, "B", 0.2)]
    prior = [record(0, "A", 0.1), record(1, "A", 0.1), record(2, "B", 0.1)]
    table = summarise(model)
    assert table["A"]["iou"] == pytest.approx(0.5) and table["mean"]["iou"] == pytest.approx(0.35)
    result = compare(model, prior, resamples=200)
    assert result["iou"]["difference"]["value"] == pytest.approx(0.25)
    assert result["iou"]["difference"]["low"] > 0  # every resample keeps the model ahead
    with pytest.raises(ValueError, match="same"):
        compare(model, prior[::-1])


def test_vectorised_bootstrap_is_the_record_by_record_one() -> None:
    """compare() resamples arrays; the same draws through summarise() on resampled records give the same CIs."""
    rng = np.random.default_rng(5)

    def records(offset: float) -> list[dict]:
        out = []
        for case in range(30):
            boxes = [{"iou": float(np.clip(rng.random() * 0.6 + offset, 0, 1)),
                      "hit": {t: bool(rng.random() < 0.5) for t in ("0.1", "0.25", "0.5", "0.75")}}
                     for _ in range(1 + case % 3)]  # 1-3 boxes: box weighting matters
            out.append({"image": case, "finding": "AB"[case % 2], "boxes": boxes, "predicted": 1,
                        "false_positives": {t: int(rng.integers(0, 3)) for t in ("0.1", "0.25", "0.5", "0.75")},
                        "dice": float(rng.random())})
        return out

    model, prior = records(0.1), records(0.0)
    result = compare(model, prior, resamples=40, seed=7)
    draw = np.random.default_rng(7)
    groups = [np.array([i for i, r in enumerate(model) if r["finding"] == f]) for f in "AB"]
    pairs = []
    for _ in range(40):
        chosen = np.concatenate([draw.choice(index, size=len(index)) for index in groups])
        pairs.append([summarise([source[i] for i in chosen])["mean"] for source in (model, prior)])
    for name in ("iou", "acc@0.5", "fp@0.1", "dice"):
        difference = np.percentile([a[name] - b[name] for a, b in pairs], [2.5, 97.5])
        assert [result[name]["difference"]["low"], result[name]["difference"]["high"]] == pytest.approx(difference)
        assert result[name]["model"]["low"] == pytest.approx(np.percentile([a[name] for a, _ in pairs], 2.5))


def test_prior_weighting_moves_the_prior_and_never_leaves_it() -> None:
    prior = np.zeros((8, 8))
    prior[2:6, 1:7] = 0.5
    heatmap = np.zeros((8, 8))
    heatmap[:, 5:] = 1.0  # the image points right, partly outside where the finding lies
    weighted = prior_weighted(heatmap, prior)
    assert weighted.max() == 1 and weighted[prior == 0].max() == 0 and weighted[2:6, 5:7].min() == 1
    assert prior_weighted(np.zeros((8, 8)), prior).max() == 0  # a blank heatmap gives nothing, not NaN


def test_location_prior_and_cross_fitting_never_see_the_scored_patient() -> None:
    boxes = {0: [Box("A", 0, 0, 4, 4)], 1: [Box("A", 4, 4, 4, 4)], 2: [Box("B", 0, 0, 8, 8)]}
    prior = location_prior(boxes, 8, ["A", "B", "C"])
    assert prior["A"][0, 0] == 0.5 and prior["A"][7, 7] == 0.5 and prior["B"].min() == 1 and prior["C"].max() == 0
    priors = cross_fitted_priors(boxes, {0: "p0", 1: "p1", 2: "p2"}, 8, ["A", "B"], folds=3)
    assert priors[0]["A"][0, 0] == 0 and priors[0]["A"][7, 7] == 1  # image 0's own box is not in its prior


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, data_root: Path, tiny_classifier: Path) -> Path:
    """A small classifier trained on the NIH sample, evaluated on the real boxed NIH images."""
    work = tmp_path_factory.mktemp("evaluate")
    boxed = prepare_cache(open_sample(data_root, ["nih-bbox"]), work / "boxed", size=64, workers=2)
    result = runner.invoke(app, ["evaluate", str(tiny_classifier), "--cache",
                                 str(boxed.directory), "--run", str(work / "eval"), "--split", "all",
                                 "--bootstrap", "50", "--gallery", "4"])
    assert result.exit_code == 0, result.output
    assert "location prior" in result.output
    return work / "eval"


def test_evaluate_writes_sane_metrics_on_real_boxes(evaluated: Path) -> None:
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert metrics["images"] == 532
    for name, entry in metrics["classification"].items():
        if "skipped" not in entry:
            assert 0 <= entry["auc"]["low"] <= entry["auc"]["value"] <= entry["auc"]["high"] <= 1, name
    localization = metrics["localization"]
    assert localization["boxes"] == 592 and "cross-fitted" in localization["prior"]
    prior = localization["location_prior"]
    assert prior["Cardiomegaly"]["acc@0.1"] > 0.9  # the heart is where it always is
    assert prior["mean"]["acc@0.1"] > 0.4
    for name in ("iou", "acc@0.1", "dice"):
        comparison = localization["comparison"][name]
        assert comparison["difference"]["value"] == pytest.approx(
            comparison["model"]["value"] - comparison["prior"]["value"])
    lines = (evaluated / "localization.jsonl").read_text().splitlines()
    assert len(lines) == 3 * localization["cases"]
    assert {json.loads(line)["source"] for line in lines} == {"model", "prior", "heatmap x prior"}
    weighted = localization["prior_weighted"]
    assert weighted["comparison"]["iou"]["prior"] == localization["comparison"]["iou"]["prior"]  # against the same prior
    assert [claim["claim"] for claim in metrics["verdict"]][-2:] == [
        "heatmap x prior > location prior (iou)", "heatmap x prior > location prior (acc@0.5)"]
    gallery = json.loads((evaluated / "gallery.json").read_text())
    assert len(gallery) == 4 and all("predicted_in_original_pixels" in entry for entry in gallery)
    assert (evaluated / "predictions.csv").read_text().count("\n") == 533
    seconds = metrics["seconds"]  # where the time went (issue 19): the stages and the rest add up to the total
    assert {"forward", "cam passes", "classification metrics", "raw-pixel floor", "model cost", "other"} <= set(seconds)
    assert sum(value for stage, value in seconds.items() if stage != "total") == pytest.approx(seconds["total"], abs=0.01)


def test_absolute_rule_gets_paper_000_threshold_from_one_place(evaluated: Path, tiny_classifier: Path,
                                                               tmp_path: Path) -> None:
    from cxrlens.config import EvaluateConfig
    from cxrlens.evaluate import evaluate
    from cxrlens.experiment import EvaluateStep

    step = EvaluateStep(kind="evaluate", name="e", data="d", checkpoint="c", box_rule="absolute")
    settings = EvaluateConfig.model_validate(step.model_dump(include=set(EvaluateConfig.model_fields)))
    settings = settings.model_copy(update={"split": "all", "bootstrap": 0, "gallery": 0, "max_boxed_images": 2})
    payload = evaluate(tiny_classifier, evaluated.parent / "boxed", tmp_path / "absolute", settings, device="cpu")
    assert payload["box_rule"] == {"rule": "absolute", "threshold": 127}
    assert json.loads((evaluated / "metrics.json").read_text())["box_rule"] == {"rule": "relative", "threshold": 0.7}


def test_cli_compares_two_evaluations_of_the_same_images(evaluated: Path, tiny_classifier: Path,
                                                         tmp_path: Path) -> None:
    """Grad-CAM++ against Grad-CAM of one classifier on the same boxed images: heatmap rows paired case by case,
    no AUROC row (one classifier); another cache is refused in one line."""
    other = tmp_path / "gradcampp"
    made = runner.invoke(app, ["evaluate", str(tiny_classifier), "--cache", str(evaluated.parent / "boxed"), "--run",
                               str(other), "--split", "all", "--cam", "gradcampp", "--bootstrap", "20", "--gallery", "0",
                               "--no-floor"])
    assert made.exit_code == 0, made.output
    result = runner.invoke(app, ["compare", str(other), str(evaluated), "--claim", "Grad-CAM++ > Grad-CAM",
                                 "--bootstrap", "50", "--out", str(tmp_path / "compare.json")])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "compare.json").read_text())
    assert payload["images"] == 532 and "Grad-CAM++ > Grad-CAM (iou)" in result.output
    assert payload["verdict"][0]["untested"].startswith("the same probabilities")
    ours = json.loads((other / "metrics.json").read_text())["localization"]["model"]["mean"]["iou"]
    theirs = json.loads((evaluated / "metrics.json").read_text())["localization"]["model"]["mean"]["iou"]
    assert payload["localization"]["iou"]["difference"]["value"] == pytest.approx(ours - theirs)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "metrics.json").write_text(json.dumps({"cache": str(tmp_path)}))
    refused = runner.invoke(app, ["compare", str(other), str(tmp_path / "elsewhere")])
    assert refused.exit_code == 2 and "compare evaluations of the same cache" in refused.output


def test_cli_card_reports_an_evaluation_beside_its_floors(evaluated: Path, tiny_classifier: Path,
                                                         tmp_path: Path) -> None:
    """cxrlens card CKPT --evaluation RUN: the heatmaps beside the location prior with CIs, every claim's verdict;
    an existing file, the checkpoint itself and a folder that is no evaluation are refused in one line."""
    out = tmp_path / "card.md"
    result = runner.invoke(app, ["card", str(tiny_classifier), "--evaluation", str(evaluated), "--out", str(out)])
    assert result.exit_code == 0, result.output
    card = out.read_text()
    iou = json.loads((evaluated / "metrics.json").read_text())["localization"]["comparison"]["iou"]
    assert f"| iou | {iou['model']['value']:.3f} [{iou['model']['low']:.3f}, {iou['model']['high']:.3f}] |" in card
    assert "## Operating thresholds" in card and "## Training data" in card and "| train |" in card
    again = runner.invoke(app, ["card", str(tiny_classifier), "--out", str(out)])
    assert again.exit_code == 2 and "exists; pass --overwrite" in again.output
    itself = runner.invoke(app, ["card", str(tiny_classifier), "--out", str(tiny_classifier), "--overwrite"])
    assert itself.exit_code == 2 and tiny_classifier.exists()
    missing = runner.invoke(app, ["card", str(tiny_classifier), "--evaluation", str(tmp_path), "--out",
                                  str(tmp_path / "other.md")])
    assert missing.exit_code == 2 and "is " in missing.output and "evaluation" in missing.output
    assert len(missing.output.strip().splitlines()) == 1


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(evaluated: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    page_path = evaluated / "report.html"
    assert page_path.is_file() and "<script" not in page_path.read_text()
    with playwright.sync_playwright() as driver:
        browser, page = open_page(driver, page_path)
        widths = page.evaluate("Array.from(document.images).map(image => image.naturalWidth)")
        headings = page.locator("h2").all_inner_texts()
        tables = page.locator("table").count()
        verdict = page.locator("table.verdict tr").all_inner_texts()
        colours = page.evaluate("Array.from(document.querySelectorAll('table.verdict td.status'))"
                                ".map(cell => getComputedStyle(cell).backgroundColor)")
        page.screenshot(path=str(evaluated / "report.png"), full_page=True)
        browser.close()
    assert len(widths) == 2 + 4 + 1 and all(width > 0 for width in widths)  # ROC, PR, gallery, training
    assert headings == ["Verdict", "Data", "Classification", "Localization against radiologist boxes", "Heatmaps",
                        "Training"]  # the report opens with the verdict
    assert [row.split("\t")[0] for row in verdict[1:]] == ["model > raw-pixel floor (mean AUROC)",
                                                            "heatmap > location prior (iou)",
                                                            "heatmap > location prior (acc@0.5)",
                                                            "heatmap x prior > location prior (iou)",
                                                            "heatmap x prior > location prior (acc@0.5)"]
    statuses = [row.split("\t")[-1] for row in verdict[1:]]
    expected = {"pass": "rgb(10, 125, 44)", "untested": "rgb(138, 138, 138)"}
    assert colours == [expected.get(status, "rgb(179, 38, 30)") for status in statuses]  # red unless it passed
    assert tables >= 3
    assert (evaluated / "report.png").stat().st_size > 50_000
