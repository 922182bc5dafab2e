"""Predict on radiographs one by one: probabilities, heatmaps and boxes in the image's own pixels.

An image of any size and bit depth (PNG, JPEG or DICOM, decoded by
:func:`cxrlens.data.io.read_radiograph`) is fitted to the classifier's input exactly as its
training cache was (side, ``squash`` / ``pad``, uint8 quantisation) and normalised with
the training mean and std. The CAM engine then explains every finding at once (CAM,
Grad-CAM, Grad-CAM++ or Score-CAM, optionally refined by the checkpoint's PCM; paper 000
eq. 1-2, paper 003 eq. 2); boxes are read off each heatmap with the evaluation's rule
(paper 003's ``relative`` Q = 0.7 by default) and mapped back to the source pixels.

With ``runtime="onnx"`` the backbone runs in ONNX Runtime from the checkpoint's export
(:mod:`cxrlens.infer.onnx_model`); the probabilities are ONNX Runtime's and only the
classifier head runs in PyTorch, to differentiate it for the gradient-based maps. The default,
``runtime="auto"``, runs whichever of the two is faster for this model on this machine: where
the model runs on a CPU, ONNX Runtime is installed and a current export lies beside the
checkpoint, a batch of up to 4 images is timed in both (ONNX Runtime was 1.4x faster
for a ResNet-50 at batch 32 on 2 cores, but 1.2x slower for MultiRes-ResNet-50 at batch 1);
otherwise the PyTorch inference model runs (:attr:`Predictor.runtime_reason` says why).
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
from cxrlens.data.io import DEFAULT_MAX_PIXELS, CXRImageError, Radiograph, read_radiograph
from cxrlens.data.preprocess import Geometry, fit_geometry, fit_image, normalise
from cxrlens.devices import resolve_device
from cxrlens.evaluate.model_cost import median_ms
from cxrlens.explain import METHODS, BoxRule, CAMExplainer, heatmap_to_boxes
from cxrlens.explain.overlay import overlay
from cxrlens.infer.input_checks import distribution_warnings, image_warnings
from cxrlens.infer.onnx_model import OnnxClassifier, default_onnx_path, weights_fingerprint
from cxrlens.models.loading import load_classifier
from cxrlens.train.feature_statistics import pooled

RUNTIMES = ("auto", "torch", "onnx")


@dataclass(frozen=True)
class Prediction:
    """One radiograph's result. Heatmaps are in model-input pixels; boxes are reported in the source
    image's pixels (``width`` x ``height``, its size in the file); ``image`` is the radiograph at
    display resolution (at most the predictor's ``display_side`` on its longer side)."""

    source: str
    image: np.ndarray                    # the radiograph for display, H' x W' in [0, 1]
    width: int                           # source image size
    height: int
    geometry: Geometry                   # source pixels -> model-input pixels
    probabilities: dict[str, float]
    heatmaps: dict[str, np.ndarray]      # finding -> S x S map in [0, 1]
    boxes: dict[str, list[Box]]          # finding -> boxes in model-input pixels, largest first
    thresholds: dict[str, float]         # finding -> the checkpoint's operating threshold (0.5 where it chose none)
    warnings: tuple[str, ...] = ()       # why the input may not be one to trust the model on (input_checks)

    def positive(self, finding: str) -> bool:
        """Whether the finding's probability reaches its operating threshold."""
        return self.probabilities[finding] >= self.thresholds[finding]

    def ranked(self) -> list[tuple[str, float]]:
        """Findings by falling probability."""
        return sorted(self.probabilities.items(), key=lambda item: item[1], reverse=True)

    def boxes_in_source(self, finding: str) -> list[Box]:
        return [self.geometry.to_source(box) for box in self.boxes[finding]]

    def _display(self, max_side: int) -> tuple[np.ndarray, Geometry]:
        """The radiograph at most ``max_side`` pixels long, and the map from its pixels to the model's."""
        factor = min(1.0, max_side / max(self.width, self.height))
        size = (max(1, round(self.width * factor)), max(1, round(self.height * factor)))
        picture = self.image
        if picture.shape[::-1] != size:
            shrinking = size[0] < picture.shape[1]
            picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        return picture, self.geometry.of_resized_source(factor)

    def resized(self, max_side: int) -> Prediction:
        """The same prediction keeping a display copy of at most ``max_side`` pixels (boxes stay in source pixels)."""
        picture, _ = self._display(max_side)
        return replace(self, image=picture)

    def overlay(self, finding: str, max_side: int = 1024) -> np.ndarray:
        """RGB uint8 picture: the radiograph (downsized to ``max_side``) under the finding's
        heatmap, with its predicted boxes (green)."""
        picture, geometry = self._display(max_side)
        heatmap = geometry.map_to_source(self.heatmaps[finding], picture.shape[1], picture.shape[0])
        boxes = [geometry.to_source(box) for box in self.boxes[finding]]
        return overlay(picture, np.clip(heatmap, 0, 1), predicted=boxes)

    def to_dict(self, top: int = 3) -> dict:
        """JSON-ready: probabilities, the ``top`` findings, and every finding's boxes."""
        return {"source": self.source, "width": self.width, "height": self.height, "warnings": list(self.warnings),
                "probabilities": {name: round(p, 6) for name, p in self.probabilities.items()},
                "top_findings": [{"finding": name, "probability": round(p, 6)} for name, p in self.ranked()[:top]],
                "thresholds": {name: round(value, 6) for name, value in self.thresholds.items()},
                "positive_findings": [name for name, _ in self.ranked() if self.positive(name)],
                "boxes": {name: [box.to_dict() for box in self.boxes_in_source(name)] for name in self.boxes},
                "boxes_in_model_pixels": {name: [box.to_dict() for box in boxes] for name, boxes in self.boxes.items()}}


class Predictor:
    """A trained checkpoint ready to explain radiographs (see the module docstring).

    :meth:`read` decodes a file with this predictor's decompression-bomb cap, no larger than the
    model input or ``display_side`` (the longest side of the pictures it will draw) need, so a
    huge radiograph never sits in memory at full size; ``predictor.predict([radiograph],
    ["name.png"])`` takes what it read (or H x W arrays in [0, 1] at their stored size), and
    :meth:`predict_files` reads and predicts files batch by batch.
    """

    def __init__(self, checkpoint: str | os.PathLike, cam: str = "gradcam", refine: bool = False,
                 runtime: str = "auto", onnx: str | os.PathLike | None = None, device: str = "auto",
                 rule: BoxRule = BoxRule(), max_pixels: int = DEFAULT_MAX_PIXELS, batch_size: int = 8,
                 display_side: int = 1024, compile: bool = False) -> None:
        METHODS.get(cam)
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
        loaded = load_classifier(checkpoint)
        if refine and loaded.refiner is None:
            raise ValueError(f"{checkpoint}: has no PCM to refine with; train one with cxrlens refine")
        self.checkpoint = Path(checkpoint)
        self.classes: list[str] = loaded.classes
        self.thresholds = {name: loaded.checkpoint.threshold(name) for name in self.classes}
        self.feature_statistics = loaded.checkpoint.feature_statistics  # None: no out-of-distribution check
        self.size, self.fit = loaded.checkpoint.input.size, loaded.checkpoint.input.fit
        self.normalisation = loaded.normalisation
        self.cam, self.rule, self.max_pixels, self.batch_size = cam, rule, max_pixels, batch_size
        self.display_side = display_side
        self.device = torch.device(resolve_device(device))
        self.model = loaded.for_inference(self.device, compile).model
        self.refiner = loaded.refiner.to(self.device) if refine else None
        self.fingerprint = weights_fingerprint(loaded.model)  # of the weights as trained (names the model)
        self.onnx: OnnxClassifier | None = None
        self.runtime_reason = "asked for"
        if runtime == "onnx":
            self.onnx = self._open_onnx(onnx, self.fingerprint)
        elif runtime == "auto":
            self.onnx, self.runtime_reason = self._faster_runtime(onnx, self.fingerprint)
        self.runtime = "torch" if self.onnx is None else "onnx"

    @property
    def method(self) -> str:
        """The CAM method as reported (``gradcam + PCM`` when refined)."""
        return self.cam + (" + PCM" if self.refiner is not None else "")

    def read(self, path: str | os.PathLike) -> Radiograph:
        """Decode a PNG / JPEG / DICOM radiograph (CXRImageError names the file and the problem)."""
        return read_radiograph(path, self.max_pixels, max_side=max(self.display_side, self.size))

    def predict_files(self, paths: Sequence[str | os.PathLike]) -> Iterator[tuple[Path, Prediction | CXRImageError]]:
        """Each file with its prediction, or with the :class:`CXRImageError` that says why it could not
        be read, in order; files are decoded one batch at a time."""
        for start in range(0, len(paths), self.batch_size):
            chunk = [Path(path) for path in paths[start:start + self.batch_size]]
            results: list[Radiograph | Prediction | CXRImageError] = []
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

    def predict(self, images: Sequence[Radiograph | np.ndarray], sources: Sequence[str]) -> list[Prediction]:
        """Predictions for decoded radiographs (see the class docstring), in batches."""
        if len(images) != len(sources):
            raise ValueError(f"{len(images)} images but {len(sources)} source names")
        results: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            results += self._predict_batch(images[start:start + self.batch_size], sources[start:start + self.batch_size])
        return results

    def inputs(self, images: Sequence[Radiograph | np.ndarray]) -> torch.Tensor:
        """The model inputs (B x 1 x S x S) of decoded radiographs: fitted as in training, normalised."""
        return self._normalised(self._fitted([_radiograph(image) for image in images]))

    def _fitted(self, radiographs: Sequence[Radiograph]) -> np.ndarray:
        """B x S x S uint8: each radiograph fitted to the model input as its training cache was."""
        return np.stack([fit_image(r.image, self.size, self.fit, (r.width, r.height)) for r in radiographs])

    def _normalised(self, fitted: np.ndarray) -> torch.Tensor:
        return normalise(torch.from_numpy(np.ascontiguousarray(fitted))[:, None].to(self.device), self.normalisation)

    def _features(self, inputs: torch.Tensor) -> torch.Tensor:
        """The CAM feature maps of normalised ``inputs`` in this predictor's runtime."""
        if self.onnx is not None:
            return self.onnx(inputs)[2]
        with torch.no_grad():
            return self.model.cam_features(inputs)

    def _warnings(self, radiographs: Sequence[Radiograph], fitted: np.ndarray, features: torch.Tensor
                  ) -> list[list[str]]:
        """Each input's warnings (:mod:`cxrlens.infer.input_checks`); the negative of an out-of-distribution image
        is scored too, to tell an inverted one."""
        found = [image_warnings(image, radiograph.view) for image, radiograph in zip(fitted, radiographs)]
        statistics = self.feature_statistics
        if statistics is None:
            return found
        scores = statistics.score(pooled(features))
        outside = np.flatnonzero(scores > statistics.threshold)
        inverted = {}
        if len(outside):
            negative = self._features(self._normalised(255 - fitted[outside]))
            inverted = dict(zip(outside.tolist(), statistics.score(pooled(negative))))
        for row, score in enumerate(scores):
            found[row] += distribution_warnings(statistics, float(score), inverted.get(row))
        return found

    def _predict_batch(self, images: Sequence[Radiograph | np.ndarray], sources: Sequence[str]) -> list[Prediction]:
        if not images:
            return []
        radiographs = [_radiograph(image) for image in images]
        fitted = self._fitted(radiographs)
        inputs = self._normalised(fitted)
        forward = None
        if self.onnx is not None:
            probabilities, _, features = self.onnx(inputs)
            forward = self.onnx.logits
        else:
            features = self._features(inputs)
        warned = self._warnings(radiographs, fitted, features)
        with CAMExplainer(self.model, self.cam, refiner=self.refiner, forward=forward) as explainer:
            explanation = explainer(inputs, features=features)
        if self.onnx is None:
            probabilities = torch.sigmoid(explanation.logits.float())
        maps = explanation.maps.float().cpu().numpy()
        probabilities = probabilities.float().cpu().numpy()
        results = []
        for row, (radiograph, source) in enumerate(zip(radiographs, sources)):
            heatmaps = {name: maps[row, column] for column, name in enumerate(self.classes)}
            boxes = {name: heatmap_to_boxes(heatmap, self.rule.threshold, self.rule.rule, name)
                     for name, heatmap in heatmaps.items()}
            geometry = fit_geometry(radiograph.width, radiograph.height, self.size, self.fit)
            prediction = Prediction(source, radiograph.image, radiograph.width, radiograph.height, geometry,
                                    {name: float(probabilities[row, column]) for column, name in enumerate(self.classes)},
                                    heatmaps, boxes, self.thresholds, tuple(warned[row]))
            results.append(prediction.resized(self.display_side))
        return results

    def _faster_runtime(self, path: str | os.PathLike | None, fingerprint: str) -> tuple[OnnxClassifier | None, str]:
        """ONNX Runtime where it can run this model and one batch runs faster there, else None (PyTorch); and why."""
        if self.device.type != "cpu":
            return None, f"the model runs on {self.device.type}"
        try:
            runner = self._open_onnx(path, fingerprint)
        except ImportError:
            return None, "ONNX Runtime is not installed"
        except (FileNotFoundError, CheckpointError) as error:
            return None, str(error).split(";")[0]
        inputs = torch.zeros(min(self.batch_size, 4), 1, self.size, self.size)
        torch_ms = median_ms(lambda: self.model(inputs), repeats=2)
        onnx_ms = median_ms(lambda: runner(inputs), repeats=2)
        reason = f"faster (one batch of {len(inputs)}: ONNX Runtime {onnx_ms:.0f} ms, PyTorch {torch_ms:.0f} ms)"
        return (runner if onnx_ms < torch_ms else None), reason

    def _open_onnx(self, path: str | os.PathLike | None, fingerprint: str) -> OnnxClassifier:
        """The checkpoint's ONNX export, refused unless exported from the same weights (``fingerprint`` of the
        model as trained: the inference model's folded weights differ)."""
        path = Path(path) if path is not None else default_onnx_path(self.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no ONNX export of {self.checkpoint}; write it with "
                                    f"cxrlens export {self.checkpoint} --onnx")
        runner = OnnxClassifier(path)
        if runner.metadata.get("fingerprint") != fingerprint:
            raise CheckpointError(f"{path}: exported from other weights than {self.checkpoint} "
                                  "(stale export?); re-export with cxrlens export --onnx --overwrite")
        return runner


def _radiograph(image: Radiograph | np.ndarray) -> Radiograph:
    """A decoded array taken at its stored size."""
    return image if isinstance(image, Radiograph) else Radiograph(image, image.shape[1], image.shape[0])
