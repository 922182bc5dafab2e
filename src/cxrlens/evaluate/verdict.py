"""The verdict: one row per claim an evaluation can test, each a paired difference with its 95 % CI.

A claim passes only when the whole CI lies above zero. A CI that straddles zero is "not shown"
and one below zero is "worse"; both are failures and are shown as such, never left out. A claim
the run cannot test (no floor fitted, no boxes in the scored images) says why.

Claims of one evaluation (``metrics.json`` of ``cxrlens evaluate``):

* the model's mean AUROC is above the raw-pixel floor's (:mod:`cxrlens.evaluate.pixel_floor`);
* its heatmaps localize better than the image-blind location prior, on IoU and on acc@0.5
  (T(IoBB) = 0.5, :mod:`cxrlens.evaluate.localization`);
* where scored, prior-aware localization (heatmap x prior) beats the prior alone, i.e. the image adds
  something to where the finding usually lies.

Claims of a linear evaluation (``cxrlens linear-eval``): at each label fraction, the probe on the
frozen features has a higher mean AUROC than the raw-pixel floor fitted on the same labelled images,
and than the same probe on a random-init copy of the encoder's network (pretraining helped).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Claim:
    """A claim, the paired difference that tests it (``{"value", "low", "high"}``) or why it is untested."""

    claim: str
    difference: dict | None
    untested: str = ""

    @property
    def status(self) -> str:
        """``pass`` (CI above 0), ``not shown`` (CI includes 0), ``worse`` (CI below 0) or ``untested``."""
        if self.difference is None or not all(np.isfinite([self.difference["low"], self.difference["high"]])):
            return "untested"
        if self.difference["low"] > 0:
            return "pass"
        return "worse" if self.difference["high"] < 0 else "not shown"

    def to_dict(self) -> dict:
        untested = self.untested or ("no confidence interval (bootstrap 0)" if self.status == "untested" else "")
        return {"claim": self.claim, "status": self.status, "difference": self.difference, "untested": untested}


def evaluation_claims(metrics: dict) -> list[Claim]:
    """The claims an evaluation's ``metrics.json`` tests."""
    floor = metrics.get("floor") or {}
    mean = floor.get("mean")
    claims = [Claim("model > raw-pixel floor (mean AUROC)", mean["difference"] if mean else None,
                    "" if mean else floor.get("skipped", "no finding scored by both"))]
    localization = metrics.get("localization")
    comparison = localization["comparison"] if localization else {}
    for metric in ("iou", "acc@0.5"):
        entry = comparison.get(metric)
        claims.append(Claim(f"heatmap > location prior ({metric})", entry["difference"] if entry else None,
                            "" if entry else "no radiologist boxes among the scored images"))
    weighted = (localization or {}).get("prior_weighted")
    if weighted:
        for metric in ("iou", "acc@0.5"):
            entry = weighted["comparison"][metric]
            claims.append(Claim(f"heatmap x prior > location prior ({metric})", entry["difference"]))
    return claims


def linear_eval_claims(payload: dict) -> list[Claim]:
    """The claims a linear evaluation's ``metrics.json`` tests at each label fraction: probe > raw-pixel floor, and
    pretrained probe > random-init probe."""
    claims = []
    for key, claim in (("floor", "probe > raw-pixel floor"), ("random_init", "pretrained probe > random-init probe")):
        compared = payload.get(key) or {}
        if "skipped" in compared:
            claims.append(Claim(f"{claim} (mean AUROC)", None, compared["skipped"]))
            continue
        for fraction, entry in compared.items():
            mean = entry.get("mean")
            claims.append(Claim(f"{claim} (mean AUROC, {fraction} of the labels)", mean["difference"] if mean else None,
                                "" if mean else "no finding scored by both"))
    return claims
