"""Backbones, multi-resolution extractors, pooling, classifiers, and their registries."""

from cxrlens.models.architectures import ARCHITECTURES, build_model, count_parameters
from cxrlens.models.backbones import BACKBONES, Backbone, WeightsUnavailableError
from cxrlens.models.classifier import PooledClassifier, SaliencyClassifier
from cxrlens.models.loading import LoadedClassifier, load_classifier, load_encoder
from cxrlens.models.pooling import GlobalAvgPool, LSELBAPool, LSEPool, lse_pool

__all__ = [
    "ARCHITECTURES", "BACKBONES", "Backbone", "GlobalAvgPool", "LSELBAPool", "LSEPool", "LoadedClassifier",
    "PooledClassifier", "SaliencyClassifier", "WeightsUnavailableError", "build_model", "count_parameters",
    "load_classifier", "load_encoder", "lse_pool",
]  # fmt: skip
