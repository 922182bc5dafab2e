"""cxrlens: label-efficient chest X-ray classification with heatmaps and boxes to check."""

__version__ = "0.1.0"
