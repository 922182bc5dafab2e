"""Which torch device a ``--device`` choice means: ``auto`` (a CUDA GPU when one is visible), ``cpu`` or ``cuda``."""

from __future__ import annotations

import os

import torch

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
DEFAULT_DEVICE = "auto"


def resolve_device(name: str = DEFAULT_DEVICE) -> str:
    """``"cpu"`` or ``"cuda"`` for a device choice; a clear error when CUDA is asked for but absent."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {name!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA GPU is visible")
    return name


def usable_cores() -> int:
    """How many CPU cores this process may run on (its affinity mask where the OS has one, e.g. a container's or a
    cluster job's share; else every core)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
