"""Heatmaps (the CAM engine) and what is read from them (boxes)."""

from cxrlens.explain.boxes import box_iou, heatmap_to_boxes
from cxrlens.explain.cams import METHODS, CAMExplainer, Explanation, explain, gradcam

__all__ = ["METHODS", "CAMExplainer", "Explanation", "box_iou", "explain", "gradcam", "heatmap_to_boxes"]
