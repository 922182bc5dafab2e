"""Warnings for inputs a model should not be trusted on (``Prediction.warnings`` of predict and serve).

* **Out of distribution**: the image's pooled CAM features score above the threshold the
  training run stored (:class:`cxrlens.checkpoints.FeatureStatistics`: the 99th percentile
  of held-out validation images, so about 1 % of new in-distribution images are flagged).
* **Intensity inverted**: an out-of-distribution image whose negative scores in
  distribution (bones dark, air bright: MONOCHROME1 read as MONOCHROME2, or an exported
  negative); TorchXRayVision users saw identical outputs for every image when the intensity
  scaling was wrong.
* **Lateral view**: a DICOM ``ViewPosition`` of LL / RL / LATERAL (the models here read
  frontal views); a lateral PNG or JPEG is left to the distribution check.
* **Low contrast or clipped**: the fitted input's intensities spread over less than
  :data:`LOW_CONTRAST` of the range, or more than :data:`CLIPPED` of its pixels at black or
  white.
"""

from __future__ import annotations

import numpy as np

from cxrlens.checkpoints import FeatureStatistics

LATERAL_VIEWS = frozenset({"LL", "RL", "LATERAL", "LAT", "LLD", "RLD", "XTABLE LATERAL"})
LOW_CONTRAST = 0.04
"""Standard deviation of the fitted input's intensities (range 0-1) below which it is called very low contrast."""
CLIPPED = 0.3
"""Fraction of the fitted input's pixels at pure black or white above which it is called clipped."""


def image_warnings(fitted: np.ndarray, view: str = "") -> list[str]:
    """The checks that need only the fitted ``uint8`` input and its DICOM view position."""
    found = []
    if view.strip().upper() in LATERAL_VIEWS:
        found.append(f"lateral view (DICOM ViewPosition {view.strip()}): the model reads frontal radiographs")
    spread = float(np.std(fitted / 255.0))
    if spread < LOW_CONTRAST:
        found.append(f"very low contrast (intensity spread {spread:.3f} of the range): findings may be invisible")
    extremes = float(np.mean((fitted == 0) | (fitted == 255)))
    if extremes > CLIPPED:
        found.append(f"clipped: {extremes:.0%} of the pixels are pure black or white")
    return found


def distribution_warnings(statistics: FeatureStatistics, score: float, inverted_score: float | None) -> list[str]:
    """The distribution check of one image from its feature ``score`` (and, when it was out of distribution, the
    score of its negative)."""
    if score <= statistics.threshold:
        return []
    found = [f"out of distribution: feature distance {score:.0f} above {statistics.threshold:.0f}, which "
             f"{statistics.percentile:g} % of the model's held-out validation images stay under; its outputs may be "
             "meaningless for this image"]
    if inverted_score is not None and inverted_score <= statistics.threshold:
        found.append(f"intensity probably inverted: the negative image is in distribution (distance "
                     f"{inverted_score:.0f}); check MONOCHROME1/2 or the export")
    return found
