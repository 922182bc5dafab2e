"""Checkpoints written atomically (temp file + rename) and read with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or does not hold what is expected."""


def save_atomic(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` so that a crash leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint safely (tensors and plain containers only)."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint does not exist") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable cxrlens checkpoint ({error})") from error
