"""ONNX export of a classifier and the ONNX Runtime backend of ``cxrlens predict --runtime onnx``.

The exported graph takes normalised images (``images``: N x 1 x S x S, N dynamic) and
returns ``probabilities`` (N x K, sigmoid), ``logits`` (N x K) and ``features`` (the
CAM-ready maps the CAM engine explains, N x C x h x w). The file's metadata
(``cxrlens`` key, JSON) carries the class names, normalisation, input size and fit, and a
fingerprint of the weights, so a prediction can check it runs the checkpoint it was
given and not a stale export.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxrlens.checkpoints import CheckpointError
from cxrlens.evaluate.model_card import default_card_path, write_model_card
from cxrlens.models.loading import load_classifier
from cxrlens.paths import refuse_overlap

OUTPUTS = ("probabilities", "logits", "features")
METADATA_KEY = "cxrlens"


class ExportedClassifier(nn.Module):
    """The classifier as exported: images -> (probabilities, logits, CAM feature maps)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.model.cam_features(images)
        logits = self.model.classify(features)
        return torch.sigmoid(logits), logits, features


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the state dict's names and values (identifies the weights an export came from)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def default_onnx_path(checkpoint: str | os.PathLike) -> Path:
    """``best.ckpt`` -> ``best.onnx`` beside it."""
    return Path(checkpoint).with_suffix(".onnx")


def write_onnx(model: nn.Module, size: int, path: str | os.PathLike, opset: int = 18,
               metadata: dict | None = None, example: torch.Tensor | None = None) -> None:
    """Write ``model`` (a cxrlens classifier) as :class:`ExportedClassifier` to ``path`` atomically,
    with a dynamic batch axis for 1 x ``size`` x ``size`` inputs and ``metadata`` under ``cxrlens``."""
    import onnx

    path = Path(path)
    if example is None:
        example = torch.randn(2, 1, size, size, generator=torch.Generator().manual_seed(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter
        torch.onnx.export(ExportedClassifier(model).eval(), (example,), temporary, input_names=["images"],
                          output_names=list(OUTPUTS), opset_version=opset, dynamo=True, external_data=False,
                          dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=4096)}}, verbose=False)
    if metadata is not None:
        graph = onnx.load(str(temporary))
        graph.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
        onnx.save(graph, str(temporary))
    os.replace(temporary, path)


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None, opset: int = 18,
                overwrite: bool = False, parity_batch: int = 2, seed: int = 0) -> dict:
    """Export ``checkpoint`` to ONNX and check it against PyTorch on a random batch.

    Returns ``{"path", "card", "opset", "max_abs_diff": {output: float}}``; the comparison runs
    ``parity_batch`` images of the model's input size through both runtimes. The checkpoint's model card
    (:mod:`cxrlens.evaluate.model_card`) is written beside the ONNX file.
    """
    out = Path(out) if out is not None else default_onnx_path(checkpoint)
    refuse_overlap(out, [checkpoint], "export")
    card = default_card_path(out)
    for path in (out, card):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: exists; pass --overwrite to replace it")
    if out.exists():
        try:
            OnnxClassifier(out)
        except (CheckpointError, FileNotFoundError):
            raise FileExistsError(f"{out}: exists and is not a cxrlens ONNX export, so cxrlens will not replace it "
                                  "(not even with --overwrite); choose another --out") from None
    loaded = load_classifier(checkpoint)
    model, size = loaded.model, loaded.checkpoint.input.size
    example = torch.randn(parity_batch, 1, size, size, generator=torch.Generator().manual_seed(seed))
    described = {"classes": loaded.classes, "normalisation": loaded.normalisation.model_dump(),
                 "input": loaded.checkpoint.input.model_dump(), "model_config": loaded.checkpoint.network.model_dump(mode="json"),
                 "fingerprint": weights_fingerprint(model), "checkpoint": Path(checkpoint).name}
    write_onnx(model, size, out, opset, described, example)
    with torch.no_grad():
        expected = ExportedClassifier(model).eval()(example)
    produced = OnnxClassifier(out)(example)
    differences = {name: float((a - b).abs().max()) for name, a, b in zip(OUTPUTS, produced, expected)}
    write_model_card(checkpoint, card)
    return {"path": str(out), "card": str(card), "opset": opset, "max_abs_diff": differences}


class OnnxClassifier:
    """An exported classifier in ONNX Runtime: ``probabilities, logits, features = runner(images)``."""

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None) -> None:
        import onnxruntime

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no ONNX model here; write one with cxrlens export CKPT --onnx")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options,
                                                        providers=providers or ["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped errors for a bad file
            raise CheckpointError(f"{self.path}: not a loadable ONNX model ({str(error).splitlines()[0]})") from error
        described = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if described is None:
            raise CheckpointError(f"{self.path}: not exported by cxrlens (no {METADATA_KEY!r} metadata)")
        self.metadata: dict = json.loads(described)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._run(list(OUTPUTS), images)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits only (Score-CAM's masked passes)."""
        return self._run(["logits"], images)[0]

    def _run(self, outputs: list[str], images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        produced = self.session.run(outputs, {"images": images.detach().cpu().numpy().astype(np.float32)})
        return tuple(torch.from_numpy(output).to(images.device) for output in produced)
