"""Heatmaps (the CAM engine and its registered methods) and what is read from them (boxes, overlays)."""

from cxrlens.explain import cam, grad_cam, grad_cam_plusplus, score_cam  # noqa: F401 - each registers its method
from cxrlens.explain.base import METHODS, CAMMethod, GradientCAM
from cxrlens.explain.boxes import BoxRule, heatmap_to_boxes
from cxrlens.explain.engine import CAMExplainer, Explanation, explain
from cxrlens.explain.grad_cam import gradcam

__all__ = ["METHODS", "BoxRule", "CAMExplainer", "CAMMethod", "Explanation", "GradientCAM", "explain", "gradcam",
           "heatmap_to_boxes"]
