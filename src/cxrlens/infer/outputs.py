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

from cxrlens.data.io import printable
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


def earlier_outputs(folder: Path, stems: Sequence[str]) -> list[Path]:
    """What an earlier ``predict`` left in ``folder`` that this run's images would replace: each stem's
    JSON and overlays (``STEM.json``, ``STEM-*.png``), and ``predictions.csv``."""
    found = [folder / "predictions.csv"] if (folder / "predictions.csv").exists() else []
    for stem in stems:
        found += [path for path in (folder / f"{stem}.json", *folder.glob(f"{stem}-*.png")) if path.exists()]
    return found


def refuse_overwrite(folder: Path, stems: Sequence[str]) -> None:
    """FileExistsError naming the first of :func:`earlier_outputs`, before anything is written."""
    found = earlier_outputs(folder, stems)
    if found:
        raise FileExistsError(f"{printable(str(found[0]))}: exists; pass --overwrite to replace earlier predictions")


def clear_earlier(folder: Path, stem: str) -> None:
    """Remove the overlays an earlier prediction of ``stem`` listed (with --overwrite, before writing anew)."""
    record = folder / f"{stem}.json"
    if record.is_file():
        for name in json.loads(record.read_text()).get("overlays", {}).values():
            (folder / Path(name).name).unlink(missing_ok=True)


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
            writer.writerow([printable(source), *(f"{probabilities[name]:.6f}" for name in classes)])


def _slug(finding: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", finding)
