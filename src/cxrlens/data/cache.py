"""The prepared cache: every image decoded and resized once into one uint8 memory map.

Layout of a cache folder::

    index.json      settings, classes, fingerprint, and per item: source path, patient,
                    view, official split, meta, boxes in source-image pixels
    labels.npy      N x K float32 labels        masks.npy  N x K bool known-label mask
    images.u8       N x S x S uint8 pixels (numpy memmap, C order)
    status.u8       N uint8: 0 pending, 1 done, 2 failed (memmap, updated as work ends)
    source_size.i32 N x 2 int32 (width, height) of each decoded source image (memmap)
    failures.jsonl  one line {"index", "path", "reason"} per image that failed to decode
    floors/         raw-pixel floors fitted on these images (:mod:`cxrlens.evaluate.pixel_floor`)

Preparing is parallel over processes, shows a progress bar, and is resumable: items are
marked done only after their pixels are written, so re-running the same command after
an interrupt finishes only what is missing. A folder prepared from other images or
settings is replaced only with ``overwrite=True``, and then only the cache's own files
(:data:`CACHE_FILES` and the :data:`FLOORS_FOLDER`) are removed; a folder holding anything that is not a cxrlens cache,
or one that is, lies inside or contains a dataset root, is never used.

Images are fitted with :func:`cxrlens.data.preprocess.fit_image` (``squash`` or ``pad``);
:meth:`PreparedCache.geometry` gives each item's source-to-cache :class:`Geometry`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import get_args

import numpy as np

from cxrlens.config import MAX_SIDE
from cxrlens.devices import usable_cores
from cxrlens.data.boxes import Box
from cxrlens.data.io import DEFAULT_MAX_PIXELS, CXRImageError, read_image
from cxrlens.data.preprocess import Fit, Geometry, fit_geometry, fit_image
from cxrlens.data.records import CXRDataset, CXRItem
from cxrlens.paths import refuse_overlap

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 2
DEFAULT_CACHE_SIZE = 256
PENDING, DONE, FAILED = 0, 1, 2
FLOORS_FOLDER = "floors"
CACHE_FILES = ("index.json", "index.json.tmp", "labels.npy", "masks.npy", "images.u8", "status.u8", "source_size.i32",
               "failures.jsonl", "patient.key")
"""What a cache folder holds (a format-1 cache also kept its patient key); ``--overwrite`` removes these and nothing
else."""


class CacheMismatchError(RuntimeError):
    """A cache folder exists but was prepared from other images or other settings."""


class PreparedCache:
    """Read access to a prepared cache folder (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        index_path = self.directory / "index.json"
        if not index_path.exists():
            raise FileNotFoundError(f"{self.directory}: not a prepared cache (no index.json); run `cxrlens data prepare`")
        try:
            index = json.loads(index_path.read_text())
            if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT_VERSION:
                found = index.get("format") if isinstance(index, dict) else None
                raise CacheMismatchError(f"{self.directory}: cache format {found} is not {CACHE_FORMAT_VERSION}; "
                                         "prepare it again")
            self.index = index
            self.size: int = int(index["size"])
            self.fit: Fit = index["fit"]
            self.classes: tuple[str, ...] = tuple(index["classes"])
            self.records: list[dict] = list(index["items"])
            self.labels = np.load(self.directory / "labels.npy")
            self.masks = np.load(self.directory / "masks.npy")
            count = len(self.records)
            self.status = np.memmap(self.directory / "status.u8", dtype=np.uint8, mode="r", shape=(count,))
            self.source_size = np.memmap(self.directory / "source_size.i32", dtype=np.int32, mode="r",
                                         shape=(count, 2))
        except (OSError, ValueError, KeyError, TypeError) as error:  # a damaged or foreign index or array
            raise CacheMismatchError(f"{self.directory}: damaged cache ({type(error).__name__}: {error}); prepare it "
                                     "again") from None
        if self.labels.shape != (count, len(self.classes)) or self.masks.shape != self.labels.shape:
            raise CacheMismatchError(f"{self.directory}: damaged cache (labels do not fit the index); prepare it again")
        self._images: np.memmap | None = None
        self._items: list[CXRItem] | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def images(self) -> np.memmap:
        """The ``N x S x S`` uint8 pixel store, opened on first use (once per worker process)."""
        if self._images is None:
            self._images = np.memmap(
                self.directory / "images.u8", dtype=np.uint8, mode="r", shape=(len(self.records), self.size, self.size)
            )
        return self._images

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_images"] = None  # each DataLoader worker maps the file itself
        return state

    def ready_indices(self) -> np.ndarray:
        """Indices of the items whose pixels are in the cache (failed and pending left out)."""
        return np.flatnonzero(np.asarray(self.status) == DONE)

    def geometry(self, index: int) -> Geometry:
        width, height = (int(v) for v in self.source_size[index])
        return fit_geometry(width, height, self.size, self.fit)

    def boxes(self, index: int) -> tuple[Box, ...]:
        """The item's boxes in cache pixels."""
        geometry = self.geometry(index)
        return tuple(geometry.to_cache(Box.from_dict(box)) for box in self.records[index]["boxes"])

    def item(self, index: int) -> CXRItem:
        """The item as its reader gave it (boxes in source-image pixels)."""
        record = self.records[index]
        return CXRItem(
            path=Path(record["path"]),
            patient_id=record["patient_id"],
            labels=self.labels[index],
            label_mask=self.masks[index],
            view=record["view"],
            boxes=tuple(Box.from_dict(box) for box in record["boxes"]),
            split=record["split"],
            meta=dict(record["meta"]),
        )

    def items(self) -> list[CXRItem]:
        """All items, e.g. for :func:`cxrlens.data.splits.split_by_patient` (built once: the records never change
        after opening; each call returns its own list)."""
        if self._items is None:
            self._items = [self.item(index) for index in range(len(self.records))]
        return list(self._items)

    def failures(self) -> list[dict]:
        path = self.directory / "failures.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def prepare_cache(
    dataset: CXRDataset,
    directory: str | os.PathLike,
    size: int = DEFAULT_CACHE_SIZE,
    fit: Fit = "squash",
    workers: int | None = None,
    overwrite: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Callable[[int, int], None] | None = None,
) -> PreparedCache:
    """Decode and resize every item of ``dataset`` into a cache at ``directory``.

    Re-running with the same dataset and settings resumes: only pending items are
    decoded. ``progress(done, total)`` is called as items finish (the CLI draws a bar).
    Returns the opened cache; images that failed are listed in ``failures.jsonl``.
    """
    if not 8 <= size <= MAX_SIDE:
        raise ValueError(f"cache size must be 8 to {MAX_SIDE} pixels, not {size}")
    if fit not in get_args(Fit):
        raise ValueError(f"fit must be one of {', '.join(get_args(Fit))}, not {fit!r}")
    if not dataset.items:
        raise ValueError(f"{dataset.name}: no images to prepare")
    directory = Path(directory)
    refuse_overlap(directory, dataset.roots, "cache folder")
    fingerprint = _fingerprint(dataset, size, fit)
    _claim_directory(directory, fingerprint, overwrite)
    count = len(dataset.items)
    if not (directory / "index.json").exists():
        _write_index(dataset, directory, size, fit, fingerprint)
    status = np.memmap(directory / "status.u8", dtype=np.uint8, mode="r+", shape=(count,))
    sizes = np.memmap(directory / "source_size.i32", dtype=np.int32, mode="r+", shape=(count, 2))
    pending = np.flatnonzero(status == PENDING)
    finished = count - len(pending)
    if progress:
        progress(finished, count)
    if len(pending):
        jobs = [(int(i), str(dataset.items[i].path)) for i in pending]
        paths = dict(jobs)
        with open(directory / "failures.jsonl", "a") as failures:
            for results in _run_jobs(jobs, directory, count, size, fit, max_pixels, workers):
                for index, width, height, error in results:
                    sizes[index] = (width, height)
                    status[index] = FAILED if error else DONE
                    if error:
                        failures.write(json.dumps({"index": index, "path": paths[index], "reason": error}) + "\n")
                finished += len(results)
                if progress:
                    progress(finished, count)
                status.flush()
        sizes.flush()
    return PreparedCache(directory)


def prepare_cache_with_bar(dataset: CXRDataset, directory: str | os.PathLike, size: int = DEFAULT_CACHE_SIZE,
                           fit: Fit = "squash", workers: int | None = None, overwrite: bool = False,
                           console: object | None = None) -> PreparedCache:
    """:func:`prepare_cache` with a rich progress bar (``console``: a rich Console, default stderr)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn(f"[bold]preparing {Path(directory).name}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("prepare", total=len(dataset))
        return prepare_cache(dataset, directory, size=size, fit=fit, workers=workers, overwrite=overwrite,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))


def _run_jobs(
    jobs: list[tuple[int, str]], directory: Path, count: int, size: int, fit: Fit, max_pixels: int, workers: int | None
) -> Iterator[list[tuple[int, int, int, str | None]]]:
    workers = max(1, workers or usable_cores())
    chunk = max(1, min(64, len(jobs) // (workers * 8) or 1))
    chunks = [jobs[start : start + chunk] for start in range(0, len(jobs), chunk)]
    settings = (str(directory / "images.u8"), count, size, fit, max_pixels)
    if workers == 1:
        _init_worker(*settings)
        yield from map(_decode_chunk, chunks)
        return
    context = multiprocessing.get_context("spawn" if os.name == "nt" else "fork")
    with context.Pool(workers, initializer=_init_worker, initargs=settings) as pool:
        yield from pool.imap_unordered(_decode_chunk, chunks)


_WORKER: dict = {}


def _init_worker(images_path: str, count: int, size: int, fit: Fit, max_pixels: int) -> None:
    _WORKER.update(
        images=np.memmap(images_path, dtype=np.uint8, mode="r+", shape=(count, size, size)),
        size=size, fit=fit, max_pixels=max_pixels,
    )  # fmt: skip


def _decode_chunk(chunk: Sequence[tuple[int, str]]) -> list[tuple[int, int, int, str | None]]:
    images: np.memmap = _WORKER["images"]
    results = []
    for index, path in chunk:
        try:
            image = read_image(path, max_pixels=_WORKER["max_pixels"])
        except CXRImageError as error:
            results.append((index, 0, 0, error.reason))
            continue
        images[index] = fit_image(image, _WORKER["size"], _WORKER["fit"])
        results.append((index, image.shape[1], image.shape[0], None))
    images.flush()
    return results


def _fingerprint(dataset: CXRDataset, size: int, fit: Fit) -> str:
    digest = hashlib.sha256(f"{CACHE_FORMAT_VERSION}|{size}|{fit}|{dataset.classes}".encode())
    for item in dataset.items:
        digest.update(os.fsencode(item.path))  # the name's bytes as on disk, UTF-8 or not
        digest.update(item.patient.encode(errors="surrogateescape"))  # a pseudonym under another key is another cache
        digest.update(item.labels.tobytes())
        digest.update(item.label_mask.tobytes())
    return digest.hexdigest()[:16]


def _claim_directory(directory: Path, fingerprint: str, overwrite: bool) -> None:
    existing = _cache_fingerprint(directory)
    if existing is not None:
        if existing == fingerprint and not overwrite:
            return
        if not overwrite:
            older = _cache_format(directory) != CACHE_FORMAT_VERSION
            raise CacheMismatchError(
                f"{directory}: holds a cache prepared " + ("by an older cxrlens" if older else
                                                           "from other images or settings")
                + f" (fingerprint {existing}, now {fingerprint}); choose another folder or pass --overwrite"
            )
        for name in CACHE_FILES:  # the cache's own files; anything else in the folder stays
            (directory / name).unlink(missing_ok=True)
        shutil.rmtree(directory / FLOORS_FOLDER, ignore_errors=True)
    elif directory.exists() and any(directory.iterdir()):
        raise CacheMismatchError(f"{directory}: folder holds files and is not a cache, so cxrlens will not write "
                                 "into it or delete anything there (not even with --overwrite); choose an empty or "
                                 "new folder")
    directory.mkdir(parents=True, exist_ok=True)


def _cache_index(directory: Path) -> dict | None:
    """The index of the cxrlens cache in ``directory`` (recognised by its format field), else None."""
    try:
        index = json.loads((directory / "index.json").read_text())
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) and "format" in index else None


def _cache_fingerprint(directory: Path) -> str | None:
    return (_cache_index(directory) or {}).get("fingerprint")


def _cache_format(directory: Path) -> object:
    return (_cache_index(directory) or {}).get("format")


def _write_index(dataset: CXRDataset, directory: Path, size: int, fit: Fit, fingerprint: str) -> None:
    count = len(dataset.items)
    np.save(directory / "labels.npy", dataset.label_matrix())
    np.save(directory / "masks.npy", dataset.mask_matrix())
    np.memmap(directory / "images.u8", dtype=np.uint8, mode="w+", shape=(count, size, size)).flush()
    np.memmap(directory / "status.u8", dtype=np.uint8, mode="w+", shape=(count,)).flush()
    np.memmap(directory / "source_size.i32", dtype=np.int32, mode="w+", shape=(count, 2)).flush()
    (directory / "failures.jsonl").touch()
    index = {
        "format": CACHE_FORMAT_VERSION,
        "fingerprint": fingerprint,
        "dataset": dataset.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "size": size,
        "fit": fit,
        "classes": list(dataset.classes),
        "items": [_item_record(item) for item in dataset.items],
    }
    temporary = directory / "index.json.tmp"
    temporary.write_text(json.dumps(index))
    temporary.replace(directory / "index.json")  # written last: its presence means complete set-up


def _item_record(item: CXRItem) -> dict:
    return {
        "path": str(item.path),
        "patient_id": item.patient_id,
        "view": item.view,
        "split": item.split,
        "meta": item.meta,
        "boxes": [box.to_dict() for box in item.boxes],
    }
