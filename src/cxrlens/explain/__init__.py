"""Heatmaps and what is read from them: boxes from CAMs."""

from cxrlens.explain.boxes import box_iou, heatmap_to_boxes

__all__ = ["box_iou", "heatmap_to_boxes"]
