"""Frozen encoder features and the linear probe on them, per label fraction (paper 002's linear evaluation).

:func:`extract_features` is the global average pool of an encoder's last feature map;
:func:`probe_fractions` fits :func:`cxrlens.evaluate.probe.linear_eval` on those features for
each label fraction of the training split; :func:`linear_eval_fractions` extracts and fits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from cxrlens.config import LinearEvalConfig, Normalisation
from cxrlens.data.cache import PreparedCache
from cxrlens.data.preprocess import normalise
from cxrlens.data.splits import label_fraction, patients_of
from cxrlens.data.torch_datasets import CachedImageDataset
from cxrlens.evaluate.probe import linear_eval
from cxrlens.models import Backbone, load_encoder


def frozen_encoder(path: str | Path | None, backbone: str = "resnet50") -> tuple[Backbone, Normalisation]:
    """The pretrained encoder in ``path`` with the normalisation it was trained with, or (``None``)
    a random-init ``backbone`` with the default normalisation, as a baseline."""
    if path is None:
        return Backbone(backbone), Normalisation()
    encoder, checkpoint = load_encoder(path)
    return encoder, checkpoint.normalisation


def extract_features(encoder: nn.Module, normalisation: Normalisation, cache: PreparedCache, indices: Sequence[int],
                     batch_size: int = 64, device: str | torch.device = "cpu") -> np.ndarray:
    """GAP features (N x C) of the selected cache items through ``encoder`` (its last map) in eval mode."""
    encoder = encoder.to(device).eval()
    return pooled_maps(lambda images: encoder(images)[-1], normalisation, cache, indices, batch_size, device)


@torch.no_grad()
def pooled_maps(maps: Callable[[torch.Tensor], torch.Tensor], normalisation: Normalisation, cache: PreparedCache,
                indices: Sequence[int], batch_size: int = 64, device: str | torch.device = "cpu") -> np.ndarray:
    """The global average (N x C, float32) of the feature ``maps`` of the selected cache items, normalised."""
    loader = DataLoader(CachedImageDataset(cache, indices), batch_size=batch_size, shuffle=False)
    parts = []
    for batch in loader:
        images = normalise(batch["image"].to(device), normalisation)
        parts.append(maps(images).mean(dim=(2, 3)).float().cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def linear_eval_fractions(encoder: nn.Module, normalisation: Normalisation, cache: PreparedCache,
                          train_indices: Sequence[int], test_indices: Sequence[int], config: LinearEvalConfig,
                          device: str | torch.device = "cpu") -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """:func:`linear_eval` for each label fraction (features extracted once): results and test scores by fraction."""
    train_indices = np.asarray(train_indices)
    test_indices = np.asarray(test_indices)
    train_features = extract_features(encoder, normalisation, cache, train_indices, config.batch_size, device)
    test_features = extract_features(encoder, normalisation, cache, test_indices, config.batch_size, device)
    return probe_fractions(train_features, test_features, cache, train_indices, test_indices, config)


def probe_fractions(train_features: np.ndarray, test_features: np.ndarray, cache: PreparedCache,
                    train_indices: np.ndarray, test_indices: np.ndarray, config: LinearEvalConfig
                    ) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """:func:`linear_eval` on features already extracted (rows in the order of the indices), per label fraction."""
    items = cache.items()
    position = {int(index): row for row, index in enumerate(train_indices)}
    patients = patients_of(items, test_indices)
    results, scores = {}, {}
    for fraction in config.fractions:
        chosen = label_fraction(items, train_indices, fraction, seed=config.seed)
        rows = np.array([position[int(index)] for index in chosen])
        results[f"{fraction:g}"], scores[f"{fraction:g}"] = linear_eval(
            train_features[rows], cache.labels[chosen], cache.masks[chosen],
            test_features, cache.labels[test_indices], cache.masks[test_indices], cache.classes, config, patients)
    return results, scores
