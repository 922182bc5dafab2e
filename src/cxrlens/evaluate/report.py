"""``cxrlens report``: one self-contained HTML page (images embedded) from an evaluation folder.

Sections: the verdict (:mod:`cxrlens.evaluate.verdict`: model vs raw-pixel floor, heatmaps vs
location prior, each a paired difference with its CI, green only when the CI is above zero),
whether the evaluated images were in the model's data (red when training images
were scored on purpose) and the findings that could not be scored, the classification
table with 95 % CIs and the raw-pixel floor per finding, ROC curves, precision-recall curves
with iso-F1 lines, the localization table (model, location prior, difference with CIs;
per finding; every threshold of a sweep), a gallery of CAM overlays (magma; radiologist boxes red, predicted boxes
green) and, when the checkpoint's training run is found, its training curves.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from cxrlens.evaluate.classification import BINARY_METRICS
from cxrlens.evaluate.evaluator import read_predictions
from cxrlens.evaluate.model_card import CARD_NAME
from cxrlens.evaluate.plots import precision_recall_figure, roc_figure, training_figure
from cxrlens.evaluate.verdict import Claim, evaluation_claims

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#1d1d1f}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}td,th{padding:.25rem .6rem;border-bottom:1px solid #eee;
text-align:right}th:first-child,td:first-child{text-align:left}.ci{color:#777;font-size:.75rem}
.better{color:#0a7d2c}.worse{color:#b3261e}.figs img{max-width:49%}.gallery{display:flex;flex-wrap:wrap;gap:.8rem}
.gallery figure{margin:0;width:240px;font-size:.75rem}.gallery img{width:240px;image-rendering:auto}
.legend span{display:inline-block;width:1rem;height:.6rem;margin:0 .3rem}.meta{color:#555;font-size:.85rem}
.leak{color:#fff;background:#b3261e;padding:.6rem .8rem;font-weight:600}
.verdict td.status{color:#fff;font-weight:600;text-align:center}.pass{background:#0a7d2c}
.fail{background:#b3261e}.untested{background:#8a8a8a}
"""

_LOCALIZATION_COLUMNS = ("iou", "dice", "acc@0.1", "acc@0.25", "acc@0.5", "acc@0.75", "fp@0.1", "fp@0.5")


def _image(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _with_ci(entry: dict) -> str:
    return f'{entry["value"]:.3f} <span class="ci">[{entry["low"]:.3f}, {entry["high"]:.3f}]</span>'


def _classification_table(metrics: dict) -> str:
    head = "".join(f"<th>{m.upper()}</th>" for m in BINARY_METRICS)
    rows = []
    for name, entry in metrics["classification"].items():
        if "skipped" in entry:
            rows.append(f"<tr><td>{html.escape(name)}</td><td colspan=7>skipped: {html.escape(entry['skipped'])}</td></tr>")
        else:
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{entry.get('threshold', 0.5):.3f}</td>"
                        + "".join(f"<td>{_with_ci(entry[m])}</td>" for m in BINARY_METRICS) + "</tr>")
    means = metrics["classification_mean"]
    rows.append("<tr><th>mean</th><th></th>" + "".join(f"<th>{means[m]:.3f}</th>" for m in BINARY_METRICS) + "</tr>")
    return f"<table><tr><th>finding</th><th>threshold</th>{head}</tr>{''.join(rows)}</table>"


def _thresholds_note(metrics: dict) -> str:
    rule = metrics.get("thresholds", {}).get("rule", "none chosen (0.5)")
    if rule.startswith("none"):
        return "ACC, SEN, SPE and F1 at threshold 0.5 (the checkpoint chose none)"
    return (f"ACC, SEN, SPE and F1 at each finding's operating threshold, chosen on the model's validation split "
            f"({html.escape(rule)})")


def _verdict_table(claims: list[Claim]) -> str:
    """One row per claim: the paired difference with its CI and a pass (green) / fail (red) / untested cell."""
    rows = []
    for claim in claims:
        kind = {"pass": "pass", "untested": "untested"}.get(claim.status, "fail")
        shown = (f"{claim.difference['value']:+.3f} <span class='ci'>[{claim.difference['low']:+.3f}, "
                 f"{claim.difference['high']:+.3f}]</span>") if claim.difference else html.escape(claim.untested)
        rows.append(f"<tr><td>{html.escape(claim.claim)}</td><td>{shown}</td>"
                    f"<td class='status {kind}'>{html.escape(claim.status)}</td></tr>")
    return ("<table class='verdict'><tr><th>claim</th><th>difference [95 % CI, paired bootstrap]</th><th>verdict</th>"
            f"</tr>{''.join(rows)}</table><p class='meta'>pass: the whole CI is above zero; not shown: it includes "
            "zero; worse: it is below zero</p>")


def _floor_table(floor: dict) -> str:
    """Per finding: the model's AUROC, the raw-pixel floor's, and their paired difference."""
    if "skipped" in floor or not floor.get("findings"):
        return f"<p class='meta'>Raw-pixel floor: {html.escape(floor.get('skipped', 'no finding scored by both'))}</p>"
    rows = [f"<tr><td>{html.escape(name)}</td><td>{entry['model']:.3f}</td><td>{entry['floor']:.3f}</td>"
            f"<td>{_with_ci(entry['difference'])}</td></tr>" for name, entry in floor["findings"].items()]
    mean = floor["mean"]
    rows.append(f"<tr><th>mean</th><th>{mean['model']:.3f}</th><th>{mean['floor']:.3f}</th>"
                f"<th>{_with_ci(mean['difference'])}</th></tr>")
    return (f"<h3>Against the raw-pixel floor</h3><p class='meta'>AUROC of a class-balanced logistic regression on "
            f"{floor['side']} x {floor['side']} raw pixels, fitted on {html.escape(floor['source'])}</p>"
            f"<table><tr><th>finding</th><th>model</th><th>floor</th><th>model - floor</th></tr>{''.join(rows)}</table>")


def _curves(run_dir: Path, metrics: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    _, probabilities, labels = read_predictions(run_dir)
    curves = {}
    for name, entry in metrics["classification"].items():
        if "skipped" in entry:
            continue
        known = np.isfinite(labels[name])
        curves[name] = (labels[name][known].astype(int), probabilities[name][known])
    return curves


def _comparison_table(comparison: dict, method: str) -> str:
    """``method`` vs the location prior for each localization metric (mean over findings), the paired difference
    coloured where its CI excludes zero (false positives: lower is better)."""
    rows = []
    for name in _LOCALIZATION_COLUMNS:
        c = comparison[name]
        lower_is_better = name.startswith("fp@")
        good = c["difference"]["low"] > 0 if not lower_is_better else c["difference"]["high"] < 0
        bad = c["difference"]["high"] < 0 if not lower_is_better else c["difference"]["low"] > 0
        css = "better" if good else "worse" if bad else ""
        rows.append(f"<tr><td>{name}</td><td>{_with_ci(c['model'])}</td><td>{_with_ci(c['prior'])}</td>"
                    f"<td class='{css}'>{_with_ci(c['difference'])}</td></tr>")
    return (f"<table><tr><th>metric (mean over findings)</th><th>{method}</th><th>location prior</th>"
            f"<th>{method} - prior</th></tr>{''.join(rows)}</table>")


def _localization_section(localization: dict | None) -> str:
    if not localization:
        return "<p>No evaluated image has radiologist boxes; no localization metrics.</p>"
    summary = _comparison_table(localization["comparison"], "model")
    weighted = localization.get("prior_weighted")
    if weighted:
        summary += ("<p class='meta'>Prior-aware localization (not in the papers): each heatmap times the finding's "
                    "location prior. It can only move the prior's mass, so it is compared with the prior alone: "
                    "a difference above zero means the image adds something.</p>"
                    + _comparison_table(weighted["comparison"], "heatmap x prior"))
    per_finding = ["<tr><th>finding</th><th>boxes</th>" + "".join(
        f"<th>{c} model / prior</th>" for c in ("iou", "acc@0.1", "acc@0.5", "dice")) + "</tr>"]
    for finding, row in localization["model"].items():
        if finding == "mean":
            continue
        prior = localization["location_prior"][finding]
        per_finding.append(f"<tr><td>{html.escape(finding)}</td><td>{int(row['boxes'])}</td>" + "".join(
            f"<td>{row[c]:.3f} / {prior[c]:.3f}</td>" for c in ("iou", "acc@0.1", "acc@0.5", "dice")) + "</tr>")
    return (f"<p class='meta'>{localization['boxes']} radiologist boxes in {localization['cases']} (image, finding) "
            f"pairs. Location prior: {html.escape(localization['prior'])}; it sees no pixels, so only the difference "
            "says what the model adds. acc@T: localization accuracy at T(IoBB); fp@T: false positives per image; "
            "CIs: paired bootstrap over cases.</p>" + summary + "<table>" + "".join(per_finding) + "</table>")


def _sweep_section(localization: dict | None) -> str:
    """Paper 004 Table 2: localization accuracy at T(IoBB) = 0.5 (and 0.1) for every swept threshold."""
    sweep = (localization or {}).get("threshold_sweep") or {}
    if not sweep:
        return ""
    rows = []
    for threshold, entry in sweep.items():
        for metric in ("acc@0.5", "acc@0.1"):
            c = entry["comparison"][metric]
            rows.append(f"<tr><td>{html.escape(threshold)}</td><td>{metric}</td><td>{_with_ci(c['model'])}</td>"
                        f"<td>{_with_ci(c['prior'])}</td><td>{_with_ci(c['difference'])}</td></tr>")
    return ("<h3>Threshold sweep</h3><p class='meta'>every threshold is reported; none is chosen on these images</p>"
            "<table><tr><th>threshold</th><th>metric</th><th>model</th><th>location prior</th><th>model - prior</th>"
            f"</tr>{''.join(rows)}</table>")


def _data_section(metrics: dict) -> str:
    """Whether the evaluated images were in the model's data, and the findings that could not be scored."""
    overlap = metrics.get("data_overlap", {})
    parts = []
    for role, entry in overlap.get("roles", {}).items():
        if not entry["either"]:
            continue
        text = (f"{entry['either']} of {entry['of_images']} evaluated images ({entry['patients']} of "
                f"{entry['of_patients']} patients) were in the model's {html.escape(role)} data")
        if entry["supervised"] and overlap.get("allowed"):
            parts.append(f"<p class='leak'>NOT A HELD-OUT RESULT: {text}, and --allow-train-overlap scored them "
                         "anyway. These numbers overstate how the model does on new patients.</p>")
        elif entry["supervised"]:  # patients the dataset's own official lists share (splits: official)
            parts.append(f"<p class='leak'>NOT A NEW-PATIENT RESULT: {text} - patients the dataset's official "
                         "lists put on both sides, kept as released (splits: official).</p>")
        else:
            parts.append(f"<p class='meta'>{text} (self-supervised pretraining: pixels only, no labels or boxes).</p>")
    if not parts:
        parts.append("<p class='meta'>No evaluated image or patient was in the model's training, validation or "
                     "pretraining data.</p>")
    if metrics.get("origin"):
        parts.append(f"<p class='leak'>Weights not trained by cxrlens: {html.escape(metrics['origin'])}.</p>")
    parts.append(_splits_note(metrics.get("splits", {})))
    unscored = metrics.get("unscored", {})
    for side, label in (("model_only", "predicted by the model but not labelled here"),
                        ("data_only", "labelled here but not predicted by the model")):
        if unscored.get(side):
            parts.append(f"<p class='meta'>Not scored, {label}: {html.escape(', '.join(unscored[side]))}</p>")
    return "".join(parts)


def _splits_note(splits: dict) -> str:
    """How the dataset's split lists were used, with the patients they share (kept) or the images dropped."""
    mode = splits.get("mode")
    if not mode or mode == "all":
        return ""
    shared = [entry for entry in splits.get("shared", []) if entry["patients"]]
    if shared:
        pairs = "; ".join(f"{entry['patients']} patients in {' and '.join(entry['splits'])} ("
                          + ", ".join(f"{count} {name} images" for name, count in entry["images"].items()) + ")"
                          for entry in shared)
        return (f"<p class='leak'>Splits: {html.escape(mode)}. The dataset's official lists share patients, kept as "
                f"released: {html.escape(pairs)}. --splits official-disjoint makes them disjoint.</p>")
    text = f"Splits: {html.escape(mode)}."
    dropped = splits.get("dropped", {})
    if dropped.get("images"):
        lists = ", ".join(f"{count} {name}" for name, count in dropped.get("by_list", {}).items())
        text += (f" Left out {dropped['images']} images ({html.escape(lists)}) of {dropped['patients']} patients the "
                 "official lists put on both the training and the test side.")
    if splits.get("moved_val_to_train"):
        text += f" Moved {splits['moved_val_to_train']} official val images of patients also in train to train."
    return f"<p class='meta'>{text} No patient is in two splits.</p>"


def _gallery(run_dir: Path) -> str:
    path = run_dir / "gallery.json"
    if not path.exists():
        return ""
    figures = []
    for entry in json.loads(path.read_text()):
        caption = f"{html.escape(entry['image'])} - {html.escape(entry['finding'])}"
        figures.append(f"<figure>{_image((run_dir / entry['file']).read_bytes(), caption)}"
                       f"<figcaption>{caption}</figcaption></figure>")
    legend = ("<p class='legend'>radiologist<span style='background:#ff4040'></span> predicted"
              "<span style='background:#40ff60'></span> heatmap: magma (bright = evidence)</p>")
    return legend + f"<div class='gallery'>{''.join(figures)}</div>"


def _training(metrics: dict) -> str:
    history_path = Path(metrics["checkpoint"]).resolve().parent.parent / "metrics.jsonl"
    if not history_path.exists():
        return "<p>Training history not found next to the checkpoint.</p>"
    history = [json.loads(line) for line in history_path.read_text().splitlines() if line.strip()]
    return _image(training_figure(history), "training curves") if history else ""


def _card_link(run_dir: Path) -> str:
    return f' (<a href="{CARD_NAME}">model card</a>)' if (run_dir / CARD_NAME).exists() else ""


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render ``run_dir``'s evaluation (``cxrlens evaluate``) to ``report.html`` (or ``out``)."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        raise FileNotFoundError(f"{metrics_path}: no evaluation here; run cxrlens evaluate first")
    metrics = json.loads(metrics_path.read_text())
    curves = _curves(run_dir, metrics)
    figures = "".join([_image(roc_figure(curves), "ROC curves"), _image(precision_recall_figure(curves), "PR curves")]) \
        if curves else "<p>No class has both positive and negative labels here.</p>"
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>cxrlens report</title>
<style>{_STYLE}</style></head><body>
<h1>cxrlens report</h1>
<p class="meta">checkpoint {html.escape(metrics['checkpoint'])}{_card_link(run_dir)}<br>data {html.escape(metrics['cache'])}, split
{html.escape(metrics['split'])}, {metrics['images']} images; heatmaps {html.escape(metrics['cam'])}, boxes
{html.escape(metrics['box_rule']['rule'])} threshold {metrics['box_rule']['threshold']}</p>
<h2>Verdict</h2>{_verdict_table(evaluation_claims(metrics))}
<h2>Data</h2>{_data_section(metrics)}
<h2>Classification</h2><p class="meta">{_thresholds_note(metrics)}; AUROC and AUPRC need no threshold; 95 % bootstrap
CIs in grey</p>{_classification_table(metrics)}
{_floor_table(metrics.get('floor', {'skipped': 'not fitted (an evaluation older than the floor)'}))}
<div class="figs">{figures}</div>
<h2>Localization against radiologist boxes</h2>{_localization_section(metrics.get('localization'))}
{_sweep_section(metrics.get('localization'))}
<h2>Heatmaps</h2>{_gallery(run_dir)}
<h2>Training</h2>{_training(metrics)}
</body></html>"""
    out = Path(out) if out else run_dir / "report.html"
    out.write_text(page, errors="backslashreplace")  # a file name that is not UTF-8 is spelt out
    return out
