"""Image-level classifiers on a feature extractor; both expose the same three steps.

``cam_features(images)`` is the map heatmaps are computed on, ``classify(features)`` the
rest of the network, and ``class_maps(features)`` each class's evidence map at feature
resolution - what CAM shows, the CAM loss trains and SEAM's PCM refines:

* :class:`PooledClassifier`: global pooling (GAP, or LSE with gamma as in paper 003) of
  the CAM feature map, then a head (a linear layer, or paper 001's MLP). Its class maps
  are CAM (Zhou et al.): ``sum_k w_ck A^k`` with the linear head's weights.
* :class:`SaliencyClassifier` (paper 004 Sec. 3.6): a shared 1x1 layer ``W`` and a sigmoid
  give the probabilistic saliency map ``S = sigmoid(W I_n)`` (B x K x N x N), pooled by
  LSE-LBA (eq. 4) to the image probability; its class maps are ``S``. Its logits are
  ``logit(p)`` so every loss works on logits alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cxrlens.models.multires import DenseMultiResDecoder
from cxrlens.models.pooling import LSELBAPool

_PROBABILITY_EPS = 1e-6


class MLPHead(nn.Module):
    """Paper 001's binary head: two fully connected layers, each preceded by dropout.

    ``fc`` is the last layer, so code that reads a head's output layer finds it by name.
    """

    def __init__(self, channels: int, hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                    nn.Dropout(dropout))
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(self.hidden(pooled))


class PooledClassifier(nn.Module):
    """Feature extractor -> CAM feature map -> pooling -> head (linear, or paper 001's MLP) logits."""

    def __init__(self, extractor: nn.Module, cam_level: int, channels: int, num_classes: int, pool: nn.Module,
                 head: nn.Module | None = None) -> None:
        super().__init__()
        self.extractor = extractor
        self.cam_level = cam_level
        self.feature_channels = channels
        self.pool = pool
        self.head = head if head is not None else nn.Linear(channels, num_classes)

    @property
    def fc(self) -> nn.Linear:
        """The linear layer producing the logits (CAM uses its weights when the head is linear)."""
        return self.head if isinstance(self.head, nn.Linear) else self.head.fc

    def cam_features(self, images: torch.Tensor) -> torch.Tensor:
        """The map CAMs are computed on: the coarsest backbone map, or MultiRes's finest."""
        return self.extractor(images)[self.cam_level]

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(features))

    @property
    def has_class_maps(self) -> bool:
        """Whether :meth:`class_maps` is defined: the head is one linear layer on the pooled map."""
        return self.head is self.fc

    def class_maps(self, features: torch.Tensor, classes: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """CAM ``sum_k w_ck A^k`` of the ``classes`` (default all), B x P x h x w."""
        if not self.has_class_maps:
            raise ValueError("CAM needs a linear head on the pooled map, and this model has an MLP head; explain it "
                             "with a gradient method such as gradcam")
        weight = self.fc.weight if classes is None else self.fc.weight[torch.as_tensor(classes, dtype=torch.long)]
        return torch.einsum("kc,bchw->bkhw", weight, features)

    def forward(self, images: torch.Tensor, with_features: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits; with ``with_features``, also the CAM feature map they came from (for the CAM loss)."""
        features = self.cam_features(images)
        return (self.classify(features), features) if with_features else self.classify(features)


class SaliencyClassifier(nn.Module):
    """Paper 004: saliency maps from a dense multi-resolution decoder, LSE-LBA pooled."""

    def __init__(self, decoder: DenseMultiResDecoder, num_classes: int, pool: LSELBAPool) -> None:
        super().__init__()
        self.extractor = decoder
        self.feature_channels = decoder.out_channels
        self.has_class_maps = True
        self.instance = nn.Conv2d(decoder.out_channels, num_classes, kernel_size=1)
        self.pool = pool

    def cam_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor(images)

    def class_maps(self, features: torch.Tensor, classes: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """The probabilistic saliency map ``S`` in [0, 1] of the ``classes`` (default all), B x P x N x N."""
        saliency = torch.sigmoid(self.instance(features))
        return saliency if classes is None else saliency[:, torch.as_tensor(classes, dtype=torch.long)]

    def saliency(self, images: torch.Tensor) -> torch.Tensor:
        """``S`` in [0, 1], B x K x N x N."""
        return self.class_maps(self.cam_features(images))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        probability = self.pool(self.class_maps(features))
        return torch.logit(probability.clamp(_PROBABILITY_EPS, 1 - _PROBABILITY_EPS))

    def forward(self, images: torch.Tensor, with_features: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features = self.cam_features(images)
        return (self.classify(features), features) if with_features else self.classify(features)
