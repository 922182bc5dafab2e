"""The architectures a :class:`cxrlens.config.ModelConfig` can name, and :func:`build_model`.

Each architecture is a function ``(config, backbone) -> module`` registered in
:data:`ARCHITECTURES`; ``showcase`` lists the (backbone, pooling) pairs ``cxrlens models
list`` prints for it. Adding an architecture is one decorated function here (or in a
module imported by ``cxrlens.models``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cxrlens.checkpoints import CheckpointError, EncoderCheckpoint, load_checkpoint
from cxrlens.config import ModelConfig
from cxrlens.models.backbones import BACKBONES, Backbone
from cxrlens.models.classifier import MLPHead, PooledClassifier, SaliencyClassifier
from cxrlens.models.multires import DenseMultiResDecoder, MergeBlockMultiRes
from cxrlens.models.pooling import GlobalAvgPool, LSELBAPool, LSEPool
from cxrlens.registry import Registry

Builder = Callable[[ModelConfig, Backbone], nn.Module]
ARCHITECTURES: Registry[Builder] = Registry("architecture")


def _pooled(config: ModelConfig, extractor: nn.Module, level: int, channels: int) -> PooledClassifier:
    if config.pooling == "lse-lba":
        raise ValueError("lse-lba pools probabilistic saliency maps: use arch dense-multires")
    pool = LSEPool(config.lse_gamma) if config.pooling == "lse" else GlobalAvgPool()
    head = MLPHead(channels, config.head_hidden, config.num_classes, config.dropout) if config.head == "mlp" else None
    return PooledClassifier(extractor, level, channels, config.num_classes, pool, head)


@ARCHITECTURES.register("standard", showcase=[(name, "gap") for name in BACKBONES],
                        description="backbone, GAP or LSE pooling of its last map, linear or MLP head (papers 000-003)")
def standard(config: ModelConfig, backbone: Backbone) -> nn.Module:
    return _pooled(config, backbone, -1, backbone.channels[-1])


@ARCHITECTURES.register("multires", showcase=[("resnet50", "lse"), ("efficientnet_b4", "lse")],
                        description="merge blocks from stride 32 to 4, CAMs on the stride-4 map (paper 003 eq. 1)")
def multires(config: ModelConfig, backbone: Backbone) -> nn.Module:
    return _pooled(config, MergeBlockMultiRes(backbone), 0, backbone.channels[0])


@ARCHITECTURES.register("dense-multires", showcase=[("resnet50", "lse-lba")],
                        description="dense multi-resolution decoder, saliency maps pooled by LSE-LBA (paper 004)")
def dense_multires(config: ModelConfig, backbone: Backbone) -> nn.Module:
    if config.pooling != "lse-lba":
        raise ValueError("the dense multi-resolution model (paper 004) pools with lse-lba")
    decoder = DenseMultiResDecoder(backbone, finest_stride=config.saliency_stride, width=config.dense_width,
                                   dense_layers=config.dense_layers, growth=config.dense_growth)
    pool = LSELBAPool(r0=config.lba_r0, num_channels=config.num_classes, per_class=config.lba_per_class)
    return SaliencyClassifier(decoder, config.num_classes, pool)


def build_model(config: ModelConfig) -> nn.Module:
    """The network ``config`` describes (see :class:`cxrlens.config.ModelConfig`)."""
    builder = ARCHITECTURES.get(config.arch)
    backbone = Backbone(config.backbone, weights=config.weights, in_chans=config.in_chans)
    if config.encoder:
        _initialise_from_encoder(backbone, config)
    if config.trainable_from:
        backbone.freeze_before(config.trainable_from)
    return builder(config, backbone)


def _initialise_from_encoder(backbone: Backbone, config: ModelConfig) -> None:
    """Load the self-supervised encoder in ``config.encoder`` into ``backbone`` (papers 000, 001)."""
    encoder = load_checkpoint(config.encoder, EncoderCheckpoint)
    if (encoder.encoder.backbone, encoder.encoder.in_chans) != (config.backbone, config.in_chans):
        raise CheckpointError(f"{config.encoder}: encoder is {encoder.encoder.backbone} with {encoder.encoder.in_chans} "
                              f"input channel(s), the model asks for {config.backbone} with {config.in_chans}")
    missing, unexpected = backbone.load_state_dict(encoder.state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{config.encoder}: encoder weights do not fit {config.backbone} "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
