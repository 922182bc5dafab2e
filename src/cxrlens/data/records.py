"""The uniform item every dataset reader yields, and the base class readers share.

A reader turns one public layout (NIH, CheXpert, Kermany, covid-chestxray-dataset, a
user's folder) into a list of :class:`CXRItem` with the same fields, so splits, the
prepared cache and training never look at a dataset's own CSV conventions again.
Boxes follow the project convention: ``(x, y, w, h)`` in pixels of the image file the
item points to (see :mod:`cxrlens.data.boxes`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrlens.data.boxes import Box

log = logging.getLogger(__name__)


class DatasetFormatError(ValueError):
    """A dataset's label file or folder layout is not what its public release looks like."""


@dataclass(frozen=True)
class CXRItem:
    """One radiograph with everything a reader knows about it.

    ``labels`` is a float32 vector over the reader's ``classes`` (1 positive, 0 negative);
    ``label_mask`` is False where a label is unknown and must not enter a loss or metric
    (CheXpert's uncertain labels under the ``ignore`` policy, unlabeled images).
    ``split`` is the dataset's official split for the item (``train``, ``val``, ``test``)
    or None when the release has none.
    """

    path: Path
    patient_id: str
    labels: np.ndarray
    label_mask: np.ndarray
    view: str | None = None
    boxes: tuple[Box, ...] = ()
    split: str | None = None
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def is_labeled(self) -> bool:
        return bool(self.label_mask.any())

    @property
    def image_id(self) -> str:
        """A name for the image that is the same in every copy of its dataset (see :func:`image_id`)."""
        return image_id(self.path, self.patient_id)

    @property
    def patient(self) -> str:
        """``reader:patient_id``, what splits group by and the leak guard compares: patient ids are unique only
        within one dataset (NIH's patient 17 and C19-Cohen's patient 17 are different people)."""
        return f"{self.meta.get('source', '')}:{self.patient_id}"


def boxed_positions(items: Sequence[CXRItem], indices: Sequence[int], findings: Iterable[str]) -> np.ndarray:
    """Which of ``indices`` carry a box of one of ``findings`` (a bool array, one entry per index)."""
    wanted = set(findings)
    return np.array([any(box.finding in wanted for box in items[int(index)].boxes) for index in indices], dtype=bool)


def image_id(path: str | os.PathLike, patient_id: str) -> str:
    """``patient/folder/file``: unique within the public releases (CheXpert names every patient's views
    ``view1_frontal.jpg`` in study folders; NIH and Kermany file names are unique) and independent of
    where the dataset was unpacked."""
    path = Path(path)
    return f"{patient_id}/{path.parent.name}/{path.name}"


@dataclass
class DatasetProblems:
    """What a reader had to leave out, kept as counts plus the first examples."""

    messages: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    keep_examples: int = 5

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        examples = self.messages.setdefault(kind, [])
        if len(examples) < self.keep_examples:
            examples.append(example)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def summary(self) -> list[str]:
        """One line per kind of problem: how many, and which first."""
        return [
            f"{count} {kind} (first: {', '.join(self.messages[kind])})"
            for kind, count in self.counts.items()
        ]


class CXRDataset:
    """Base of every reader: a name, the class names, the items, and what was left out.

    Subclasses fill ``items`` in their constructor and report every row they drop
    through ``problems`` (logged once, as one warning per kind). ``roots`` are the folders
    the dataset was read from: nothing cxrlens writes may go into them or contain them.
    """

    name: str = "dataset"

    def __init__(
        self,
        classes: Sequence[str],
        items: Iterable[CXRItem],
        problems: DatasetProblems,
        name: str | None = None,
        log_problems: bool = True,
        roots: Iterable[str | os.PathLike] = (),
    ) -> None:
        if name is not None:
            self.name = name
        self.roots: tuple[Path, ...] = tuple(Path(root) for root in roots)
        self.classes: tuple[str, ...] = tuple(classes)
        self.items: list[CXRItem] = list(items)
        for item in self.items:  # the reader an item came from: patient ids are only unique within one
            item.meta.setdefault("source", self.name)
        self.problems = problems
        if log_problems:
            for line in problems.summary():
                log.warning("%s: %s", self.name, line)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> CXRItem:
        return self.items[index]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.items)} images, {len(self.classes)} classes)"

    def label_matrix(self) -> np.ndarray:
        """``N x K`` float32 labels of all items."""
        return _stack([item.labels for item in self.items], len(self.classes), np.float32)

    def mask_matrix(self) -> np.ndarray:
        """``N x K`` bool mask of known labels."""
        return _stack([item.label_mask for item in self.items], len(self.classes), bool)

    def positives(self) -> dict[str, int]:
        """Number of known positives per class."""
        counts = (self.label_matrix() * self.mask_matrix()).sum(axis=0)
        return {name: int(count) for name, count in zip(self.classes, counts)}


def _stack(rows: list[np.ndarray], width: int, dtype: type) -> np.ndarray:
    if not rows:
        return np.zeros((0, width), dtype=dtype)
    return np.stack(rows).astype(dtype)


def label_vector(classes: Sequence[str], positives: Iterable[str]) -> np.ndarray:
    """float32 multi-hot vector over ``classes`` for the names in ``positives``."""
    index = {name: i for i, name in enumerate(classes)}
    vector = np.zeros(len(classes), dtype=np.float32)
    for name in positives:
        vector[index[name]] = 1.0
    return vector


def unlabeled(num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Label vector and all-False mask of an unlabeled item."""
    return np.zeros(num_classes, dtype=np.float32), np.zeros(num_classes, dtype=bool)


def require_columns(path: Path, columns: Iterable[str], required: Iterable[str]) -> None:
    """Raise :class:`DatasetFormatError` naming ``path`` and every missing column."""
    present = set(columns)
    missing = [column for column in required if column not in present]
    if missing:
        raise DatasetFormatError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"found {', '.join(repr(c) for c in sorted(present))}"
        )


def scan_images(directory: Path, suffixes: Iterable[str]) -> dict[str, Path]:
    """Map file name -> path for the files in ``directory`` (not recursive) with ``suffixes``."""
    wanted = {suffix.lower() for suffix in suffixes}
    if not directory.is_dir():
        return {}
    with os.scandir(directory) as entries:
        paths = sorted(
            Path(entry.path)
            for entry in entries
            if entry.is_file() and Path(entry.name).suffix.lower() in wanted
        )
    return {path.name: path for path in paths}


def usable_file(path: Path | None, name: str, problems: DatasetProblems) -> bool:
    """True when ``path`` exists and is non-empty; otherwise record why under ``problems``."""
    if path is None:
        problems.add("rows whose image file is missing", name)
        return False
    try:
        size = path.stat().st_size
    except OSError:
        problems.add("rows whose image file is missing", name)
        return False
    if size == 0:
        problems.add("rows whose image file is empty (0 bytes)", name)
        return False
    return True
