"""Predict on radiographs one by one: probabilities, heatmaps and boxes in the image's own pixels.

An image of any size and bit depth (PNG, JPEG or DICOM, decoded by
:func:`cxrlens.data.io.read_image`) is fitted to the classifier's input exactly as its
training cache was (side, ``squash`` / ``pad``, uint8 quantisation) and normalised with
the training mean and std. The CAM engine then explains every finding at once (CAM,
Grad-CAM, Grad-CAM++ or Score-CAM, optionally refined by the checkpoint's PCM; paper 000
eq. 1-2, paper 003 eq. 2); boxes are read off each heatmap with the evaluation's rule
(paper 003's ``relative`` Q = 0.7 by default) and mapped back to the source pixels.

With ``runtime="onnx"`` the backbone runs in ONNX Runtime from the checkpoint's export
(:mod:`cxrlens.infer.onnx_model`); the probabilities are ONNX Runtime's and only the
classifier head runs in PyTorch, to differentiate it for the gradient-based maps.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from cxrlens.checkpoints import CheckpointError
from cxrlens.data.boxes import Box
from cxrlens.data.io import DEFAULT_MAX_PIXELS, CXRImageError, read_image
from cxrlens.data.preprocess import Geometry, fit_geometry, fit_image, normalise
from cxrlens.devices import resolve_device
from cxrlens.explain import METHODS, BoxRule, CAMExplainer, heatmap_to_boxes
from cxrlens.explain.overlay import overlay
from cxrlens.infer.onnx_model import OnnxClassifier, default_onnx_path, weights_fingerprint
from cxrlens.models.loading import load_classifier

RUNTIMES = ("torch", "onnx")


@dataclass(frozen=True)
class Prediction:
    """One radiograph's result. Heatmaps are in model-input pixels; boxes in the source image's."""

    source: str
    image: np.ndarray                    # decoded radiograph, H x W in [0, 1]
    geometry: Geometry                   # source pixels -> model-input pixels
    probabilities: dict[str, float]
    heatmaps: dict[str, np.ndarray]      # finding -> S x S map in [0, 1]
    boxes: dict[str, list[Box]]          # finding -> boxes in model-input pixels, largest first

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    def ranked(self) -> list[tuple[str, float]]:
        """Findings by falling probability."""
        return sorted(self.probabilities.items(), key=lambda item: item[1], reverse=True)

    def boxes_in_source(self, finding: str) -> list[Box]:
        return [self.geometry.to_source(box) for box in self.boxes[finding]]

    def resized(self, max_side: int) -> Prediction:
        """The same prediction on the radiograph downsized to at most ``max_side`` pixels (for display);
        its boxes in source pixels are then in the downsized image's pixels."""
        factor = min(1.0, max_side / max(self.width, self.height))
        if factor == 1.0:
            return self
        size = (max(1, round(self.width * factor)), max(1, round(self.height * factor)))
        return replace(self, image=cv2.resize(self.image, size, interpolation=cv2.INTER_AREA),
                       geometry=self.geometry.of_resized_source(factor))

    def overlay(self, finding: str, max_side: int = 1024) -> np.ndarray:
        """RGB uint8 picture: the radiograph (downsized to ``max_side``) under the finding's
        heatmap, with its predicted boxes (green)."""
        shown = self.resized(max_side)
        heatmap = shown.geometry.map_to_source(shown.heatmaps[finding], shown.width, shown.height)
        return overlay(shown.image, np.clip(heatmap, 0, 1), predicted=shown.boxes_in_source(finding))

    def to_dict(self, top: int = 3) -> dict:
        """JSON-ready: probabilities, the ``top`` findings, and every finding's boxes."""
        return {"source": self.source, "width": self.width, "height": self.height,
                "probabilities": {name: round(p, 6) for name, p in self.probabilities.items()},
                "top_findings": [{"finding": name, "probability": round(p, 6)} for name, p in self.ranked()[:top]],
                "boxes": {name: [box.to_dict() for box in self.boxes_in_source(name)] for name in self.boxes},
                "boxes_in_model_pixels": {name: [box.to_dict() for box in boxes] for name, boxes in self.boxes.items()}}


class Predictor:
    """A trained checkpoint ready to explain radiographs (see the module docstring).

    ``predictor.predict([image], ["name.png"])`` takes decoded H x W arrays in [0, 1];
    :meth:`read` decodes a file with this predictor's decompression-bomb cap, and
    :meth:`predict_files` reads and predicts files batch by batch.
    """

    def __init__(self, checkpoint: str | os.PathLike, cam: str = "gradcam", refine: bool = False,
                 runtime: str = "torch", onnx: str | os.PathLike | None = None, device: str = "auto",
                 rule: BoxRule = BoxRule(), max_pixels: int = DEFAULT_MAX_PIXELS, batch_size: int = 8) -> None:
        METHODS.get(cam)
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
        loaded = load_classifier(checkpoint)
        if refine and loaded.refiner is None:
            raise ValueError(f"{checkpoint}: has no PCM to refine with; train one with cxrlens refine")
        self.checkpoint = Path(checkpoint)
        self.classes: list[str] = loaded.classes
        self.size, self.fit = loaded.checkpoint.input.size, loaded.checkpoint.input.fit
        self.normalisation = loaded.normalisation
        self.cam, self.rule, self.max_pixels, self.batch_size = cam, rule, max_pixels, batch_size
        self.device = torch.device(resolve_device(device))
        self.model = loaded.model.to(self.device)
        self.refiner = loaded.refiner.to(self.device) if refine else None
        self.runtime = runtime
        self.onnx = self._open_onnx(onnx) if runtime == "onnx" else None

    @property
    def method(self) -> str:
        """The CAM method as reported (``gradcam + PCM`` when refined)."""
        return self.cam + (" + PCM" if self.refiner is not None else "")

    def read(self, path: str | os.PathLike) -> np.ndarray:
        """Decode a PNG / JPEG / DICOM radiograph (CXRImageError names the file and the problem)."""
        return read_image(path, max_pixels=self.max_pixels)

    def predict_files(self, paths: Sequence[str | os.PathLike]) -> Iterator[tuple[Path, Prediction | CXRImageError]]:
        """Each file with its prediction, or with the :class:`CXRImageError` that says why it could not
        be read, in order; files are decoded one batch at a time."""
        for start in range(0, len(paths), self.batch_size):
            chunk = [Path(path) for path in paths[start:start + self.batch_size]]
            results: list[np.ndarray | Prediction | CXRImageError] = []
            for path in chunk:
                try:
                    results.append(self.read(path))
                except CXRImageError as error:
                    results.append(error)
            readable = [row for row, result in enumerate(results) if not isinstance(result, CXRImageError)]
            predicted = self._predict_batch([results[row] for row in readable], [str(chunk[row]) for row in readable])
            for row, prediction in zip(readable, predicted):
                results[row] = prediction
            yield from zip(chunk, results)

    def predict(self, images: Sequence[np.ndarray], sources: Sequence[str]) -> list[Prediction]:
        """Predictions for decoded radiographs (H x W float arrays in [0, 1]), in batches."""
        if len(images) != len(sources):
            raise ValueError(f"{len(images)} images but {len(sources)} source names")
        results: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            results += self._predict_batch(images[start:start + self.batch_size], sources[start:start + self.batch_size])
        return results

    def inputs(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """The model inputs (B x 1 x S x S) of decoded radiographs: fitted as in training, normalised."""
        pixels = torch.from_numpy(np.stack([fit_image(image, self.size, self.fit) for image in images]))[:, None]
        return normalise(pixels.to(self.device), self.normalisation)

    def _predict_batch(self, images: Sequence[np.ndarray], sources: Sequence[str]) -> list[Prediction]:
        if not images:
            return []
        inputs = self.inputs(images)
        features, forward = None, None
        if self.onnx is not None:
            probabilities, _, features = self.onnx(inputs)
            forward = self.onnx.logits
        with CAMExplainer(self.model, self.cam, refiner=self.refiner, forward=forward) as explainer:
            explanation = explainer(inputs, features=features)
        if self.onnx is None:
            probabilities = torch.sigmoid(explanation.logits.float())
        maps = explanation.maps.float().cpu().numpy()
        probabilities = probabilities.float().cpu().numpy()
        results = []
        for row, (image, source) in enumerate(zip(images, sources)):
            heatmaps = {name: maps[row, column] for column, name in enumerate(self.classes)}
            boxes = {name: heatmap_to_boxes(heatmap, self.rule.threshold, self.rule.rule, name)
                     for name, heatmap in heatmaps.items()}
            geometry = fit_geometry(image.shape[1], image.shape[0], self.size, self.fit)
            results.append(Prediction(source, image, geometry,
                                      {name: float(probabilities[row, column]) for column, name in enumerate(self.classes)},
                                      heatmaps, boxes))
        return results

    def _open_onnx(self, path: str | os.PathLike | None) -> OnnxClassifier:
        path = Path(path) if path is not None else default_onnx_path(self.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no ONNX export of {self.checkpoint}; write it with "
                                    f"cxrlens export {self.checkpoint} --onnx")
        runner = OnnxClassifier(path)
        if runner.metadata.get("fingerprint") != weights_fingerprint(self.model):
            raise CheckpointError(f"{path}: exported from other weights than {self.checkpoint} "
                                  "(stale export?); re-export with cxrlens export --onnx --overwrite")
        return runner
