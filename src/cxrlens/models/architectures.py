"""The architectures a :class:`cxrlens.config.ModelConfig` can name, and :func:`build_model`.

Each architecture is a function ``(config, backbone) -> module`` registered in
:data:`ARCHITECTURES`; ``showcase`` lists the (backbone, pooling) pairs ``cxrlens models
list`` prints for it. Adding an architecture is one decorated function here (or in a
module imported by ``cxrlens.models``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from cxrlens.checkpoints import CheckpointError, ClassifierCheckpoint, EncoderCheckpoint, load_checkpoint
from cxrlens.config import ModelConfig
from cxrlens.data.labels import canonical
from cxrlens.models.backbones import BACKBONES, Backbone
from cxrlens.models.classifier import MLPHead, PooledClassifier, SaliencyClassifier
from cxrlens.models.multires import DenseMultiResDecoder, MergeBlockMultiRes
from cxrlens.models.pooling import GlobalAvgPool, LSELBAPool, LSEPool
from cxrlens.models.xrv import published_model, xrv_head
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


def build_model(config: ModelConfig, classes: Sequence[str] | None = None) -> nn.Module:
    """The network ``config`` describes (see :class:`cxrlens.config.ModelConfig`), with the starting weights its
    ``init`` names. Given the ``classes`` the head will predict, a linear head starts from the rows of the same
    findings (canonical names) in the ``init`` model's head, where it has one (TorchXRayVision, a classifier)."""
    builder = ARCHITECTURES.get(config.arch)
    backbone = Backbone(config.backbone, weights=config.weights, in_chans=config.in_chans)
    head = None
    if config.init_kind == "file":
        head = _initialise_from_checkpoint(backbone, config)
    elif config.init_kind == "xrv" and config.weights:
        head = (*xrv_head(config.weights), published_model(config.init[len("xrv:"):]).labels)
    if config.trainable_from:
        backbone.freeze_before(config.trainable_from)
    model = builder(config, backbone)
    if head is not None and classes is not None and isinstance(model, PooledClassifier) and model.has_class_maps:
        _copy_head_rows(model.fc, classes, *head)
    return model


def _initialise_from_checkpoint(backbone: Backbone, config: ModelConfig
                                ) -> tuple[torch.Tensor, torch.Tensor, Sequence[str]] | None:
    """Load the backbone of the cxrlens checkpoint ``config.init``: a self-supervised encoder (papers 000, 001) or a
    classifier, whose linear head (weight, bias, classes) is returned for :func:`_copy_head_rows`."""
    found = load_checkpoint(config.init, (EncoderCheckpoint, ClassifierCheckpoint))
    network = found.encoder if isinstance(found, EncoderCheckpoint) else found.network
    if (network.backbone, network.in_chans) != (config.backbone, config.in_chans):
        raise CheckpointError(f"{config.init}: backbone is {network.backbone} with {network.in_chans} input "
                              f"channel(s), the model asks for {config.backbone} with {config.in_chans}")
    state, head = found.state, None
    if isinstance(found, ClassifierCheckpoint):
        if network.arch != "standard":
            raise CheckpointError(f"{config.init}: a {network.arch} classifier; only a standard one starts a model")
        state = {key[len("extractor."):]: value for key, value in found.state.items() if key.startswith("extractor.")}
        if "head.weight" in found.state:
            head = (found.state["head.weight"], found.state["head.bias"], found.classes)
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{config.init}: weights do not fit {config.backbone} "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return head


@torch.no_grad()
def _copy_head_rows(fc: nn.Linear, classes: Sequence[str], weight: torch.Tensor, bias: torch.Tensor,
                    names: Sequence[str]) -> None:
    """Row ``i`` of ``fc`` := the row of ``names`` with class ``i``'s canonical name, where there is one (``''``, an
    output TorchXRayVision never trained, matches nothing)."""
    rows = {canonical(name): row for row, name in enumerate(names) if name}
    for row, name in enumerate(classes):
        if canonical(name) in rows:
            fc.weight[row] = weight[rows[canonical(name)]]
            fc.bias[row] = bias[rows[canonical(name)]]


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
