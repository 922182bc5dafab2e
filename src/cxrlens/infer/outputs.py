"""What ``cxrlens predict`` writes: per image a JSON and one heatmap overlay PNG per shown finding,
and ``predictions.csv`` with every image's probabilities. Nothing existing is replaced
unless asked."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from cxrlens.infer.predictor import Prediction


def output_stem(source: str | Path, taken: set[str]) -> str:
    """A file-name stem for ``source`` not yet in ``taken`` (``chest``, ``chest-2``, ...); adds it to ``taken``."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).stem) or "image"
    stem, number = base, 1
    while stem in taken:
        number += 1
        stem = f"{base}-{number}"
    taken.add(stem)
    return stem


def planned_files(stem: str, findings: Sequence[str]) -> list[str]:
    return [f"{stem}.json", *(f"{stem}-{_slug(finding)}.png" for finding in findings)]


def refuse_overwrite(folder: Path, names: Sequence[str]) -> None:
    """FileExistsError naming the first of ``names`` already in ``folder``."""
    for name in names:
        if (folder / name).exists():
            raise FileExistsError(f"{folder / name}: exists; pass --overwrite to replace earlier predictions")


def write_prediction(prediction: Prediction, folder: Path, stem: str, findings: Sequence[str], about: dict,
                     top: int = 3, max_side: int = 1024) -> dict:
    """Write ``stem.json`` and the overlays of ``findings``; returns the JSON payload.

    ``about`` (checkpoint, CAM method, runtime, box rule) is recorded in the JSON.
    """
    folder.mkdir(parents=True, exist_ok=True)
    overlays = {}
    for finding in findings:
        name = f"{stem}-{_slug(finding)}.png"
        Image.fromarray(prediction.overlay(finding, max_side)).save(folder / name)
        overlays[finding] = name
    payload = {**about, **prediction.to_dict(top), "overlays": overlays}
    (folder / f"{stem}.json").write_text(json.dumps(payload, indent=2))
    return payload


def write_probability_table(path: Path, rows: Sequence[tuple[str, dict[str, float]]], classes: Sequence[str]) -> None:
    """``predictions.csv``: one row per image (source, then each class's probability)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", *classes])
        for source, probabilities in rows:
            writer.writerow([source, *(f"{probabilities[name]:.6f}" for name in classes)])


def _slug(finding: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", finding)
