"""What ``cxrlens predict`` writes into its output folder (claimed as a ``predictions`` folder,
:mod:`cxrlens.folders`): per image a JSON and one heatmap overlay PNG per shown finding (with ``--dicom-out``, for a
DICOM input, also its DICOM objects, :mod:`cxrlens.infer.dicom_out`), and
``predictions.csv`` with every image's probabilities and its calls at the checkpoint's operating
thresholds, merged across runs.

An image keeps its stem across runs (its JSON records its source); another image with the
same file name gets ``NAME-2``. Earlier predictions of the same images are replaced only
with ``--overwrite``, and everything is checked before anything is written.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from cxrlens.data.io import printable
from cxrlens.infer.predictor import Prediction

TABLE = "predictions.csv"


def assign_stems(folder: Path, sources: Sequence[str]) -> list[str]:
    """A file-name stem per source (``chest``, ``chest-2``, ...): a stem whose JSON in ``folder`` belongs
    to another source is taken; one that belongs to the same source is that source's again."""
    taken: set[str] = set()
    stems = []
    for source in sources:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).stem) or "image"
        stem, number = base, 1
        while stem in taken or _recorded_source(folder, stem) not in (None, source):
            number += 1
            stem = f"{base}-{number}"
        taken.add(stem)
        stems.append(stem)
    return stems


def _recorded(folder: Path, stem: str) -> dict:
    """The JSON an earlier prediction wrote for ``stem`` (``{}`` when there is none or it is not one)."""
    try:
        record = json.loads((folder / f"{stem}.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _recorded_source(folder: Path, stem: str) -> str | None:
    path = folder / f"{stem}.json"
    return str(_recorded(folder, stem).get("source", "")) if path.exists() else None


def refuse_overwrite(folder: Path, stems: Sequence[str], classes: Sequence[str]) -> None:
    """FileExistsError, before anything is written, for an earlier prediction of one of the images, or
    for a table of another model's classes that this run's rows cannot join."""
    for stem in stems:
        if (folder / f"{stem}.json").exists():
            raise FileExistsError(f"{printable(str(folder / stem))}.json: exists; pass --overwrite to replace "
                                  "earlier predictions of the same images")
    refuse_other_table(folder, classes)


def refuse_other_table(folder: Path, classes: Sequence[str]) -> None:
    header = _table(folder)[0]
    if header and header != _header(classes):
        raise FileExistsError(f"{folder / TABLE}: holds predictions of a model with other findings (or of an older "
                              "cxrlens without the positive_findings column); choose another --out")


def _header(classes: Sequence[str]) -> list[str]:
    return ["image", *classes, "positive_findings"]


def clear_earlier(folder: Path, stem: str) -> None:
    """Remove the overlays and DICOM files an earlier prediction of ``stem`` listed (with --overwrite, before
    writing anew)."""
    record = _recorded(folder, stem)
    for name in _mapping(record.get("overlays")).values():
        _remove(folder, stem, name)
    clear_written(folder, _mapping(record.get("dicom")), stem)


def clear_written(folder: Path, dicom: dict, stem: str) -> None:
    """Remove the DICOM files of ``stem``'s ``dicom`` record (:func:`cxrlens.infer.dicom_out.write_dicom_out`'s
    names)."""
    for name in [*_mapping(dicom.get("secondary_capture")).values(), dicom.get("structured_report")]:
        _remove(folder, stem, name)


def _remove(folder: Path, stem: str, name: object) -> None:
    """Remove ``folder/name`` if it is an overlay or DICOM file of ``stem`` (a record read back is not trusted)."""
    path = folder / Path(str(name)).name
    if path.name.startswith(f"{stem}-") and path.suffix in (".png", ".dcm"):
        path.unlink(missing_ok=True)


def _mapping(value: object) -> dict:
    """``value`` when an earlier JSON holds a mapping there, else ``{}``."""
    return value if isinstance(value, dict) else {}


def write_prediction(prediction: Prediction, folder: Path, stem: str, findings: Sequence[str], about: dict,
                     top: int = 3, max_side: int = 1024) -> dict:
    """Write ``stem.json`` and the overlays of ``findings``; returns the JSON payload.

    ``about`` (checkpoint, CAM method, runtime, box rule) is recorded in the JSON.
    """
    folder.mkdir(parents=True, exist_ok=True)
    overlays = {}
    for finding in findings:
        name = f"{stem}-{slug(finding)}.png"
        Image.fromarray(prediction.overlay(finding, max_side)).save(folder / name)
        overlays[finding] = name
    payload = {**about, **prediction.to_dict(top), "overlays": overlays}
    (folder / f"{stem}.json").write_text(json.dumps(payload, indent=2))
    return payload


def write_probability_table(folder: Path, rows: Sequence[tuple[str, dict[str, float], Sequence[str]]],
                            classes: Sequence[str]) -> None:
    """``predictions.csv``: one row per image (source, each class's probability, then the findings at or above the
    checkpoint's operating thresholds, ``|``-separated); rows of earlier runs for other images are kept, rows for
    the same images replaced."""
    _, earlier = _table(folder)
    fresh = {printable(source): (probabilities, positives) for source, probabilities, positives in rows}
    with open(folder / TABLE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(_header(classes))
        writer.writerows(row for row in earlier if row and row[0] not in fresh)
        for source, (probabilities, positives) in fresh.items():
            writer.writerow([source, *(f"{probabilities[name]:.6f}" for name in classes), "|".join(positives)])


def _table(folder: Path) -> tuple[list[str], list[list[str]]]:
    """The header and rows of an earlier ``predictions.csv`` (empty when there is none)."""
    try:
        with open(folder / TABLE, newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error):
        return [], []
    return (rows[0], rows[1:]) if rows else ([], [])


def slug(finding: str) -> str:
    """A finding's name as it goes into file names (``Pleural_Thickening``; other characters become ``_``)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", finding)
