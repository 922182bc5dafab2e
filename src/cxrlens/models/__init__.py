"""Backbones, multi-resolution extractors, pooling and classifiers."""

from cxrlens.models.backbones import BACKBONES, Backbone, WeightsUnavailableError
from cxrlens.models.classifier import PooledClassifier, SaliencyClassifier, build_model, count_parameters
from cxrlens.models.pooling import GlobalAvgPool, LSELBAPool, LSEPool, lse_pool

__all__ = [
    "BACKBONES", "Backbone", "GlobalAvgPool", "LSELBAPool", "LSEPool", "PooledClassifier",
    "SaliencyClassifier", "WeightsUnavailableError", "build_model", "count_parameters", "lse_pool",
]  # fmt: skip
