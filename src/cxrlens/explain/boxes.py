"""Boxes from a heatmap: threshold, OpenCV contours, bounding rectangles.

Three threshold rules from the papers:

* ``"absolute"`` - paper 000: the heatmap scaled to 0..255 (min-max) keeps pixels at or
  above ``threshold`` (127);
* ``"relative"`` - paper 003: pixels at or above ``threshold`` (Q = 0.7) times the map's
  maximum (paper 003 says "a constant threshold Q = 0.7" on maps it scales to [0, 1],
  which is the same for a map whose minimum is 0);
* ``"probability"`` - paper 004: pixels whose value - a probability, the map not rescaled -
  is at least ``threshold`` (tau).

Each outer contour of the kept region (``cv2.findContours``, external) gives one box
(``cv2.boundingRect``) in the heatmap's pixels; rescale with :meth:`Box.rescaled` to
the original image. :class:`BoxRule` carries a rule and its threshold, with each paper's
threshold as the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cxrlens.data.boxes import Box

PAPER_THRESHOLDS: dict[str, float] = {"relative": 0.7, "absolute": 127, "probability": 0.5}
"""Each rule's threshold in its paper: Q = 0.7 (paper 003), 127 of 255 (paper 000), tau (paper 004 sweeps 0.1, 0.4
and 0.8; 0.5 when one value is asked for)."""


@dataclass(frozen=True)
class BoxRule:
    """How boxes are read off a heatmap: paper 003 ``relative`` 0.7 (default), paper 000 ``absolute`` 127, or
    paper 004 ``probability`` tau."""

    rule: str = "relative"
    threshold: float = PAPER_THRESHOLDS["relative"]

    @classmethod
    def from_option(cls, rule: str, threshold: float | None = None) -> BoxRule:
        """The rule named on a command line or in a config, with its paper's threshold unless one is given."""
        if rule not in PAPER_THRESHOLDS:
            raise ValueError(f"--box-rule must be one of {', '.join(PAPER_THRESHOLDS)}, not {rule!r}")
        return cls(rule, PAPER_THRESHOLDS[rule] if threshold is None else threshold)


def binarize(heatmap: np.ndarray, threshold: float, rule: str = "absolute") -> np.ndarray:
    """The uint8 {0, 1} region a heatmap (H x W, any range) keeps under ``rule``."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.ndim != 2:
        raise ValueError(f"expected a 2-D heatmap, got shape {heatmap.shape}")
    if rule == "absolute":
        low, high = heatmap.min(), heatmap.max()
        scaled = (heatmap - low) / (high - low) * 255 if high > low else np.zeros_like(heatmap)
        return (scaled >= threshold).astype(np.uint8)
    if rule == "relative":
        peak = heatmap.max()
        return ((heatmap >= threshold * peak) & (heatmap > 0)).astype(np.uint8) if peak > 0 else np.zeros(
            heatmap.shape, np.uint8)
    if rule == "probability":
        return (heatmap >= threshold).astype(np.uint8)
    raise ValueError(f"threshold rule must be 'absolute' (paper 000), 'relative' (paper 003) or 'probability' "
                     f"(paper 004), not {rule!r}")


def heatmap_to_boxes(heatmap: np.ndarray, threshold: float = 127, rule: str = "absolute",
                     finding: str = "") -> list[Box]:
    """One box per connected region of the thresholded heatmap, largest first."""
    region = binarize(heatmap, threshold, rule)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = [Box(finding, *map(float, cv2.boundingRect(contour))) for contour in contours]
    return sorted(boxes, key=lambda box: box.w * box.h, reverse=True)
