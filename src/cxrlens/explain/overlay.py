"""Pictures a clinician can read: a heatmap over the radiograph (magma, as paper 000's
figures) with the radiologist's boxes in one colour and the predicted boxes in another."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from cxrlens.data.boxes import Box

TRUTH_COLOUR = (255, 64, 64)      # RGB red: radiologist (paper 000's figures)
PREDICTED_COLOUR = (64, 255, 96)  # RGB green: read off the heatmap


def overlay(image: np.ndarray, heatmap: np.ndarray, truths: Sequence[Box] = (), predicted: Sequence[Box] = (),
            alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 H x W x 3: ``image`` (H x W, uint8 or [0, 1]) blended with the magma ``heatmap`` ([0, 1])."""
    gray = image if image.dtype == np.uint8 else np.clip(image * 255, 0, 255).astype(np.uint8)
    if heatmap.shape != gray.shape:
        heatmap = cv2.resize(heatmap.astype(np.float32), gray.shape[::-1], interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.clip(heatmap * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_MAGMA)[..., ::-1]
    base = np.repeat(gray[..., None], 3, axis=2)
    picture = np.ascontiguousarray((base * (1 - alpha) + colour * alpha).astype(np.uint8))
    thickness = max(1, round(gray.shape[0] / 256))
    for boxes, rgb in ((truths, TRUTH_COLOUR), (predicted, PREDICTED_COLOUR)):
        for box in boxes:
            x0, y0, x1, y1 = (int(round(v)) for v in box.as_xyxy())
            cv2.rectangle(picture, (x0, y0), (x1 - 1, y1 - 1), rgb, thickness)
    return picture
