"""Output folders cxrlens owns, so that nothing else is ever written into or removed.

A command that writes a folder of results (a training run, an evaluation, a linear
evaluation, predictions, an experiment) first claims it: the folder must lie outside its
inputs (:func:`cxrlens.paths.refuse_overlap`) and be new, empty, or marked as written by
the same kind of command (``cxrlens.json``). A folder holding anything else is refused,
with or without ``--overwrite``; and ``--overwrite`` replaces only the files the command
itself writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from cxrlens import __version__
from cxrlens.paths import refuse_overlap

MARKER = "cxrlens.json"


class FolderTakenError(RuntimeError):
    """The folder holds files that cxrlens did not write, or those of another kind of command."""


def owner(folder: str | os.PathLike) -> str | None:
    """The kind of command whose marker ``folder`` holds, else None."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker.get("kind") if isinstance(marker, dict) and isinstance(marker.get("kind"), str) else None


def check_folder(folder: str | os.PathLike, kind: str, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse ``folder`` for a ``kind`` output unless it is outside ``inputs`` and new, empty or ``kind``'s own."""
    folder = Path(folder)
    refuse_overlap(folder, inputs, f"{kind} folder")
    if folder.exists() and not folder.is_dir():
        raise FolderTakenError(f"{folder}: is a file, not a folder; choose a new folder")
    found = owner(folder)
    if folder.is_dir() and any(folder.iterdir()) and found != kind:
        what = f"a cxrlens {found} folder" if found else "files cxrlens did not write"
        raise FolderTakenError(f"{folder}: holds {what}, and is not a cxrlens {kind} folder, so cxrlens will not "
                               "write into it or delete anything there (not even with --overwrite); choose an "
                               "empty or new folder")


def claim_folder(folder: str | os.PathLike, kind: str, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """:func:`check_folder`, then create the folder with ``kind``'s marker; returns it."""
    folder = Path(folder)
    check_folder(folder, kind, inputs)
    folder.mkdir(parents=True, exist_ok=True)
    if owner(folder) != kind:
        (folder / MARKER).write_text(json.dumps({"kind": kind, "cxrlens": __version__}) + "\n")
    return folder


def remove_own(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Delete the listed files of a claimed ``folder`` (what its command wrote before); nothing else."""
    for name in names:
        path = Path(folder) / name
        if path.is_file() or path.is_symlink():
            path.unlink()
