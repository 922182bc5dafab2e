"""How an image becomes a model input: fitting to the model's square side, and normalisation.

* Geometry: ``fit="squash"`` resizes to S x S (what the papers do); ``fit="pad"`` keeps the
  aspect ratio and pads the short side with black, centred; ``fit="crop"`` keeps the aspect
  ratio and cuts the centre square (TorchXRayVision's ``XRayCenterCrop`` + ``XRayResizer``).
  :class:`Geometry` is the affine map from source pixels to model pixels; boxes and heatmaps
  travel through it both ways.
* :func:`fit_image` turns a decoded float image in [0, 1] into the uint8 S x S pixels the
  prepared cache stores and inference feeds, so both see identical inputs.
* :func:`normalise` is the one place intensities are normalised: uint8 -> float32
  ``(x / 255 - mean) / std``, with the mean and std a checkpoint records
  (:class:`cxrlens.config.Normalisation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch

from cxrlens.config import Normalisation
from cxrlens.data.boxes import Box

Fit = Literal["squash", "pad", "crop"]


@dataclass(frozen=True)
class Geometry:
    """Affine map from source-image pixels to model (cache) pixels: ``x' = x * scale_x + offset_x``."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    def to_cache(self, box: Box) -> Box:
        return box.rescaled(self.scale_x, self.scale_y, self.offset_x, self.offset_y)

    def to_source(self, box: Box) -> Box:
        return box.rescaled(
            1 / self.scale_x, 1 / self.scale_y, -self.offset_x / self.scale_x, -self.offset_y / self.scale_y
        )

    def of_resized_source(self, factor: float) -> Geometry:
        """The map from the source image resized by ``factor`` (e.g. for display) to cache pixels."""
        return Geometry(self.scale_x / factor, self.scale_y / factor, self.offset_x, self.offset_y)

    def map_to_source(self, array: np.ndarray, width: int, height: int) -> np.ndarray:
        """Resample a cache-pixel float map (e.g. a heatmap) onto the ``width x height`` source grid
        (bilinear, pixel centres aligned; padding regions take the nearest edge value)."""
        matrix = np.array([[self.scale_x, 0.0, self.offset_x + 0.5 * self.scale_x - 0.5],
                           [0.0, self.scale_y, self.offset_y + 0.5 * self.scale_y - 0.5]])
        return cv2.warpAffine(np.asarray(array, dtype=np.float32), matrix, (width, height),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


def fit_geometry(width: int, height: int, size: int, fit: Fit) -> Geometry:
    """The :class:`Geometry` of a ``width x height`` image fitted into ``size x size``."""
    if fit == "squash":
        return Geometry(size / width, size / height, 0.0, 0.0)
    scale = size / (max(width, height) if fit == "pad" else min(width, height))
    return Geometry(scale, scale, (size - width * scale) / 2, (size - height * scale) / 2)


def fit_image(image: np.ndarray, size: int, fit: Fit, source_size: tuple[int, int] | None = None) -> np.ndarray:
    """Resize a float image in [0, 1] to ``size x size`` uint8 (area interpolation when shrinking).

    ``source_size`` (width, height): the size the image has in its file, when ``image`` was
    decoded smaller; the fitted pixels then match :func:`fit_geometry` of the file's size.
    """
    width, height = source_size or image.shape[::-1]
    geometry = fit_geometry(width, height, size, fit)
    target_w = size if fit == "squash" else max(1, round(width * geometry.scale_x))
    target_h = size if fit == "squash" else max(1, round(height * geometry.scale_y))
    shrinking = target_w < image.shape[1] or target_h < image.shape[0]
    resized = cv2.resize(image, (target_w, target_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    pixels = np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)
    if fit == "squash":
        return pixels
    if fit == "crop":
        top, left = (target_h - size) // 2, (target_w - size) // 2
        return np.ascontiguousarray(pixels[top : top + size, left : left + size])
    canvas = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - target_h) // 2, (size - target_w) // 2
    canvas[top : top + target_h, left : left + target_w] = pixels
    return canvas


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape) -> float32 in [0, 1] on the same device."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images from a cxrlens dataset, got {images.dtype}")
    return images.to(torch.float32).div_(255.0)


def normalise(images: torch.Tensor, normalisation: Normalisation) -> torch.Tensor:
    """uint8 images -> the float32 model input ``(x / 255 - mean) / std``."""
    return (to_unit_float(images) - normalisation.mean) / normalisation.std


def pixel_statistics(parts: Sequence[tuple[np.ndarray, np.ndarray]], sample: int = 2000, seed: int = 0
                     ) -> Normalisation:
    """Mean and std of the pixels (in [0, 1]) of the images at ``indices`` of each ``(N x S x S uint8 store,
    indices)`` part - at most ``sample`` images in all, drawn with ``seed`` (paper 000 normalises with "the dataset
    mean and standard deviation")."""
    chosen = [(images, int(index)) for images, indices in parts for index in np.asarray(indices, dtype=np.int64)]
    if not chosen:
        raise ValueError("no images to measure the intensity mean and std on")
    if len(chosen) > sample:
        chosen = [chosen[i] for i in sorted(np.random.default_rng(seed).choice(len(chosen), size=sample, replace=False))]
    total = squares = 0.0
    for images, index in chosen:
        pixels = np.asarray(images[index], dtype=np.float64) / 255.0
        total += pixels.mean()
        squares += (pixels * pixels).mean()
    mean = total / len(chosen)
    std = float(np.sqrt(max(squares / len(chosen) - mean * mean, 0.0)))
    return Normalisation(mean=round(mean, 6), std=round(max(std, 1e-3), 6))
