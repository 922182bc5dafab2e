"""Image-level classifiers built on a feature extractor, and the model factory.

* :class:`PooledClassifier`: global pooling (GAP, or LSE with gamma as in paper 003) of
  the CAM feature map, then one linear layer. ``cam_features`` returns that map and
  ``fc`` its class weights, so CAM (Zhou et al.) is ``fc.weight @ features``.
* :class:`SaliencyClassifier` (paper 004 Sec. 3.6): a shared 1x1 layer ``W`` and a sigmoid
  give the probabilistic saliency map ``S = sigmoid(W I_n)`` (B x K x N x N), pooled by
  LSE-LBA (eq. 4) to the image probability. Its logits are ``logit(p)`` so every loss
  works on logits alike.
"""

from __future__ import annotations

import torch
from torch import nn

from cxrlens.config import ModelConfig
from cxrlens.models.backbones import Backbone
from cxrlens.models.multires import DenseMultiResDecoder, MergeBlockMultiRes
from cxrlens.models.pooling import GlobalAvgPool, LSELBAPool, LSEPool
from cxrlens.models.pretrained import load_encoder_state
from cxrlens.train.checkpoint import CheckpointError

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

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.cam_features(images))


class SaliencyClassifier(nn.Module):
    """Paper 004: saliency maps from a dense multi-resolution decoder, LSE-LBA pooled."""

    def __init__(self, decoder: DenseMultiResDecoder, num_classes: int, pool: LSELBAPool) -> None:
        super().__init__()
        self.extractor = decoder
        self.instance = nn.Conv2d(decoder.out_channels, num_classes, kernel_size=1)
        self.pool = pool

    def cam_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor(images)

    def saliency(self, images: torch.Tensor) -> torch.Tensor:
        """``S`` in [0, 1], B x K x N x N."""
        return torch.sigmoid(self.instance(self.cam_features(images)))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        probability = self.pool(torch.sigmoid(self.instance(features)))
        return torch.logit(probability.clamp(_PROBABILITY_EPS, 1 - _PROBABILITY_EPS))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.cam_features(images))


def build_model(config: ModelConfig) -> nn.Module:
    """The network ``config`` describes (see :class:`cxrlens.config.ModelConfig`)."""
    backbone = Backbone(config.backbone, weights=config.weights, in_chans=config.in_chans)
    if config.encoder:
        _load_pretrained_encoder(backbone, config)
    if config.trainable_from:
        backbone.freeze_before(config.trainable_from)
    if config.arch == "dense-multires":
        if config.pooling != "lse-lba":
            raise ValueError("the dense multi-resolution model (paper 004) pools with lse-lba")
        decoder = DenseMultiResDecoder(backbone, finest_stride=config.saliency_stride, width=config.dense_width,
                                       dense_layers=config.dense_layers, growth=config.dense_growth)
        pool = LSELBAPool(r0=config.lba_r0, num_channels=config.num_classes, per_class=config.lba_per_class)
        return SaliencyClassifier(decoder, config.num_classes, pool)
    if config.pooling == "lse-lba":
        raise ValueError("lse-lba pools probabilistic saliency maps: use arch dense-multires")
    pool = LSEPool(config.lse_gamma) if config.pooling == "lse" else GlobalAvgPool()
    extractor, level = (MergeBlockMultiRes(backbone), 0) if config.arch == "multires" else (backbone, -1)
    channels = backbone.channels[level]
    head = MLPHead(channels, config.head_hidden, config.num_classes, config.dropout) if config.head == "mlp" else None
    return PooledClassifier(extractor, level, channels, config.num_classes, pool, head)


def _load_pretrained_encoder(backbone: Backbone, config: ModelConfig) -> None:
    """Initialise ``backbone`` from the self-supervised encoder in ``config.encoder``."""
    encoder_config, state = load_encoder_state(config.encoder)
    if (encoder_config.backbone, encoder_config.in_chans) != (config.backbone, config.in_chans):
        raise CheckpointError(f"{config.encoder}: encoder is {encoder_config.backbone} with {encoder_config.in_chans} "
                              f"input channel(s), the model asks for {config.backbone} with {config.in_chans}")
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{config.encoder}: encoder weights do not fit {config.backbone} "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
