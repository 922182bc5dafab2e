"""t-SNE of encoder features, one panel per checkpoint (paper 002 Fig. 3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402


def tsne_embedding(features: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE of ``features`` (N x C); perplexity is capped below N."""
    perplexity = min(perplexity, max(2.0, (len(features) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def tsne_figure(panels: Mapping[str, np.ndarray], groups: np.ndarray, group_names: Sequence[str],
                path: str | Path, seed: int = 0) -> Path:
    """Save a PNG with one t-SNE panel per entry of ``panels`` (title -> features), coloured by ``groups``."""
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for axis, (title, features) in zip(axes[0], panels.items()):
        points = tsne_embedding(features, seed)
        for value, name in enumerate(group_names):
            chosen = groups == value
            axis.scatter(points[chosen, 0], points[chosen, 1], s=6, alpha=0.7, label=name)
        axis.set_title(title, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0][0].legend(loc="best", fontsize=8, markerscale=2)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
