"""Bounding boxes ``(x, y, w, h)`` in pixels of the image they belong to (NIH's convention).

All resolution changes go through :func:`Box.rescaled` so that a box read in NIH's
1024-px coordinates, an image stored at 512 px and a cache at 256 px stay consistent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """A radiologist's box for one finding: top-left ``(x, y)``, width ``w``, height ``h``."""

    finding: str
    x: float
    y: float
    w: float
    h: float

    def rescaled(self, scale_x: float, scale_y: float, offset_x: float = 0.0, offset_y: float = 0.0) -> Box:
        """The same box after ``x' = x * scale_x + offset_x`` (and likewise for y)."""
        return Box(
            self.finding,
            self.x * scale_x + offset_x,
            self.y * scale_y + offset_y,
            self.w * scale_x,
            self.h * scale_y,
        )

    def as_xyxy(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    @property
    def area(self) -> float:
        return self.w * self.h

    def intersection(self, other: Box) -> float:
        """Area of the overlap with ``other``."""
        ax0, ay0, ax1, ay1 = self.as_xyxy()
        bx0, by0, bx1, by1 = other.as_xyxy()
        return max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))

    def to_dict(self) -> dict[str, float | str]:
        return {"finding": self.finding, "x": self.x, "y": self.y, "w": self.w, "h": self.h}

    @classmethod
    def from_dict(cls, data: dict) -> Box:
        return cls(str(data["finding"]), float(data["x"]), float(data["y"]), float(data["w"]), float(data["h"]))


def rescale_boxes(boxes: tuple[Box, ...], from_size: tuple[int, int], to_size: tuple[int, int]) -> tuple[Box, ...]:
    """Scale boxes given on an image of ``from_size = (width, height)`` to ``to_size``."""
    scale_x = to_size[0] / from_size[0]
    scale_y = to_size[1] / from_size[1]
    return tuple(box.rescaled(scale_x, scale_y) for box in boxes)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (paper 000)."""
    inter = a.intersection(b)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def iobb(truth: Box, predicted: Box) -> float:
    """Intersection over the predicted box's area, T(IoBB) of Wang et al. 2017 (paper 003)."""
    return truth.intersection(predicted) / predicted.area if predicted.area > 0 else 0.0


def union_mask(boxes: tuple[Box, ...] | list[Box], height: int, width: int) -> np.ndarray:
    """uint8 H x W mask, 1 inside any of ``boxes`` (pixel-covering: fractional edges round outwards)."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for box in boxes:
        x0, y0, x1, y1 = box.as_xyxy()
        left, top = max(int(math.floor(x0)), 0), max(int(math.floor(y0)), 0)
        right, bottom = min(int(math.ceil(x1)), width), min(int(math.ceil(y1)), height)
        if right > left and bottom > top:
            mask[top:bottom, left:right] = 1
    return mask
