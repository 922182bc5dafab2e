"""The training images' feature summary that predict and serve measure new inputs against.

After a classifier trains, :func:`record_feature_statistics` passes up to ``limit`` of its
training images and its validation images through the best checkpoint, takes the global
average of the CAM feature map (the representation the findings are read from), and stores
in the checkpoint a probabilistic-PCA summary of the training features
(:class:`cxrlens.checkpoints.FeatureStatistics`: mean, top ``components`` axes and their
variances, the mean variance off them). The warning threshold is the ``percentile`` (99) of
the *validation* images' scores: images the model never trained on, so about 1 % of new
in-distribution images are flagged by construction; the test split's rate is measured by
the tests and recorded in the README.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA

from cxrlens.checkpoints import FeatureStatistics, save_checkpoint
from cxrlens.config import Normalisation
from cxrlens.data.cache import PreparedCache
from cxrlens.evaluate.frozen_features import pooled_maps
from cxrlens.models.loading import load_classifier

COMPONENTS = 32
PERCENTILE = 99.0


def pooled(features: torch.Tensor) -> np.ndarray:
    """Global average of CAM feature maps (N x D x h x w -> N x D, float64): what the summary describes."""
    return features.detach().float().mean(dim=(-2, -1)).double().cpu().numpy()


def cache_features(model: torch.nn.Module, cache: PreparedCache, indices: Sequence[int],
                   normalisation: Normalisation, device: str = "cpu", batch_size: int = 64) -> np.ndarray:
    """:func:`pooled` CAM features of the cache images ``indices`` (as predict pools them)."""
    model = model.to(device).eval()
    return pooled_maps(model.cam_features, normalisation, cache, indices, batch_size, device).astype(np.float64)


def summarise(train: np.ndarray, held_out: np.ndarray, components: int = COMPONENTS,
              percentile: float = PERCENTILE) -> FeatureStatistics:
    """The summary of ``train`` features, thresholded at the ``percentile`` of the ``held_out`` features' scores."""
    count, dimension = train.shape
    kept = max(1, min(components, count - 1, dimension - 1))
    pca = PCA(n_components=kept, random_state=0).fit(train)
    total = float(np.var(train, axis=0, ddof=1).sum())
    residual = max((total - float(pca.explained_variance_.sum())) / max(dimension - kept, 1), 1e-12)
    statistics = FeatureStatistics(mean=pca.mean_.tolist(), components=pca.components_.tolist(),
                                   variances=np.maximum(pca.explained_variance_, 1e-12).tolist(),
                                   residual_variance=residual, threshold=0.0, percentile=percentile, images=count,
                                   held_out=len(held_out))
    reference = held_out if len(held_out) else train
    return statistics.model_copy(update={"threshold": float(np.percentile(statistics.score(reference), percentile))})


def record_feature_statistics(checkpoint: str | Path, cache: PreparedCache, train: np.ndarray, held_out: np.ndarray,
                              device: str = "cpu", limit: int = 2000, seed: int = 0) -> FeatureStatistics:
    """Summarise ``checkpoint``'s features of the cache's ``train`` images (at most ``limit``, drawn with ``seed``)
    against its ``held_out`` ones, and store the summary in the checkpoint."""
    loaded = load_classifier(checkpoint)
    if len(train) > limit:
        train = np.sort(np.random.default_rng(seed).choice(train, size=limit, replace=False))
    statistics = summarise(cache_features(loaded.model, cache, train, loaded.normalisation, device),
                           cache_features(loaded.model, cache, held_out, loaded.normalisation, device))
    save_checkpoint(loaded.checkpoint.model_copy(update={"feature_statistics": statistics}), checkpoint)
    return statistics
