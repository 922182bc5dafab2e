"""Where the sample data lives (``--data-root``, else ``$CXRLENS_DATA``, else ``../shared/data``),
and the rule every command's output follows: never inside, over, or around what it reads."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

DATA_ROOT_ENV = "CXRLENS_DATA"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_DEFAULT_CANDIDATES = (Path.cwd() / ".." / "shared" / "data", _REPO_ROOT / ".." / "shared" / "data")


def overlap(output: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> Path | None:
    """The first of ``inputs`` that ``output`` is, lies inside, or contains; None when there is none."""
    target = Path(output).expanduser().resolve()
    for given in inputs:
        source = Path(given).expanduser().resolve()
        if target == source or target in source.parents or source in target.parents:
            return Path(given)
    return None


def refuse_overlap(output: str | os.PathLike, inputs: Iterable[str | os.PathLike], role: str = "output") -> None:
    """ValueError when ``output`` is, lies inside, or contains one of ``inputs``."""
    hit = overlap(output, inputs)
    if hit is not None:
        raise ValueError(f"{output}: this {role} overlaps the input {hit}; cxrlens never writes into, over or "
                         "around what it reads: choose a place outside it")


def find_data_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """The data root to use, or None when none is given and the default does not exist.

    An explicitly given root (argument or environment variable) must exist: a typo there
    is an error, not a silent fall-back.
    """
    given = explicit if explicit is not None else os.environ.get(DATA_ROOT_ENV)
    if given:
        root = Path(given).expanduser()
        if not root.is_dir():
            source = "--data-root" if explicit is not None else f"${DATA_ROOT_ENV}"
            raise FileNotFoundError(f"{root}: data root given by {source} is not a folder")
        return root.resolve()
    for candidate in _DEFAULT_CANDIDATES:
        if candidate.is_dir():
            return candidate.resolve()
    return None


HOME_ENV = "CXRLENS_HOME"


def pseudonym_key() -> bytes:
    """This machine's secret for pseudonymising medical record numbers: ``$CXRLENS_HOME/patient.key`` (default
    ``~/.cxrlens``), created once, readable by its owner only. One key per machine, not per cache, so a patient keeps
    one pseudonym in every cache and plan made here; a cache shared without it does not let anyone test MRN guesses."""
    home = Path(os.environ.get(HOME_ENV) or Path.home() / ".cxrlens").expanduser()
    path = home / "patient.key"
    if not path.is_file():
        home.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    return bytes.fromhex(path.read_text().strip())
