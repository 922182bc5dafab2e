"""Optional features and the install extra each needs (``pip install 'cxrlens[serve]'``).

The core (``pip install cxrlens``) prepares data, trains, pretrains, explains, evaluates and
reports. Serving, ONNX, TorchXRayVision models, experiment trackers, DICOM out and the documentation site are extras; a command
that needs one that is missing fails in one line naming the install (:func:`missing_extra`).
"""

from __future__ import annotations

EXTRAS: dict[str, tuple[str, str]] = {
    "fastapi": ("serve", "cxrlens serve"), "uvicorn": ("serve", "cxrlens serve"),
    "starlette": ("serve", "cxrlens serve"), "multipart": ("serve", "cxrlens serve"),
    "python_multipart": ("serve", "cxrlens serve"),
    "onnx": ("onnx", "ONNX export and ONNX Runtime"), "onnxscript": ("onnx", "ONNX export and ONNX Runtime"),
    "onnxruntime": ("onnx", "ONNX export and ONNX Runtime"),
    "torchxrayvision": ("xrv", "TorchXRayVision models"),
    "tensorboard": ("track", "experiment tracking"), "mlflow": ("track", "experiment tracking"),
    "highdicom": ("dicom-out", "predict --dicom-out"),
}
"""Top-level module -> (extra, what needs it)."""


def install_line(extra: str) -> str:
    return f"pip install 'cxrlens[{extra}]'"


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """The one line for a missing optional package, or None when ``error`` is about another module."""
    module = (error.name or "").partition(".")[0]
    if module not in EXTRAS:
        return None
    extra, needs = EXTRAS[module]
    return f"{needs}: the optional package {module!r} is not installed; {install_line(extra)}"
