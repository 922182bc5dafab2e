"""Where the sample data lives (``--data-root``, else ``$CXRLENS_DATA``, else ``../shared/data``),
and the rule every command's output follows: never inside, over, or around what it reads."""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from importlib import resources
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
    ``~/.cxrlens``), 32 random bytes written once, readable by its owner only. One key per machine, not per cache, so
    a patient keeps one pseudonym in every cache and plan made here; a cache shared without it does not let anyone
    test MRN guesses. Copy it to another machine to compare pseudonyms made on both."""
    home = Path(os.environ.get(HOME_ENV) or Path.home() / ".cxrlens").expanduser()
    return _read_key(home / "patient.key")


def pseudonym_key_id() -> str:
    """A short public name of this machine's key (:func:`pseudonym_key`), recorded beside every pseudonym."""
    return hmac.new(pseudonym_key(), b"cxrlens key id", hashlib.sha256).hexdigest()[:8]


@functools.cache
def _read_key(path: Path) -> bytes:
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".patient.key.{os.getpid()}")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
            try:
                os.link(temporary, path)  # atomic, and never replaces a key another process wrote first
            except FileExistsError:
                pass
            finally:
                temporary.unlink()
        except OSError as error:
            raise OSError(f"{path}: cannot create the key that pseudonymises DICOM PatientIDs ({error.strerror}); set "
                          f"${HOME_ENV} to a writable folder") from None
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError, UnicodeDecodeError):
        key = b""
    if len(key) != 32:
        raise OSError(f"{path}: not a cxrlens patient key (64 hex digits); restore it, or move it away to make a new "
                      "one (the pseudonyms of earlier caches and checkpoints then change)")
    return key


def bundled_config(name: str) -> Path:
    """A config shipped with cxrlens (``configs/<name>.yaml``)."""
    return Path(str(resources.files("cxrlens") / "configs" / f"{name}.yaml"))


def bundled_configs() -> list[Path]:
    """Every config shipped with cxrlens."""
    return sorted(bundled_config("*").parent.glob("*.yaml"))
