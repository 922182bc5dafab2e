"""Which torch device a ``--device`` choice means: ``auto`` (a CUDA GPU when one is visible), ``cpu`` or ``cuda``."""

from __future__ import annotations

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
