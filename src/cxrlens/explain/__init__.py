"""Heatmaps (the CAM engine and its registered methods) and what is read from them (boxes, overlays)."""

from cxrlens.explain import cam, gradcam, gradcampp, scorecam  # noqa: F401 - each registers its method
from cxrlens.explain.base import METHODS, CAMMethod, GradientCAM
from cxrlens.explain.boxes import BoxRule, heatmap_to_boxes
from cxrlens.explain.engine import CAMExplainer, Explanation, explain

__all__ = ["METHODS", "BoxRule", "CAMExplainer", "CAMMethod", "Explanation", "GradientCAM", "explain",
           "heatmap_to_boxes"]
