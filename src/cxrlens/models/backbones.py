"""Backbone factory: timm networks with a 1-channel stem that return their feature maps.

Every backbone returns four feature maps at strides 4, 8, 16 and 32 (coarse last), so
CAMs, the CAM loss, MultiRes merging and PCM all hook into the same place without
forward hooks. The coarsest map is the network's ``forward_features`` output (for
EfficientNet-B4 after its 1x1 conv head, 1,792 channels, as in paper 003 Table 4; for
DenseNet-121 after its final norm).

Weights: ``None`` (random init), a local weights file (ImageNet RGB weights; the stem is
turned into one channel by summing over RGB, timm's ``adapt_input_conv``), or
``"imagenet"`` to download them through timm (needs internet; fails with a clear
:class:`WeightsUnavailableError` offline).

Backbones are looked up by name in :data:`BACKBONES`. A timm network with
``forward_intermediates`` is one line: ``BACKBONES.add("convnext_tiny", timm_network("convnext_tiny"))``;
any other network is a registered function ``(weights, in_chans) -> module`` with timm's
``feature_info``, ``num_features`` and ``forward_intermediates``.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import timm
import torch
from huggingface_hub import constants as hub_constants
from torch import nn

from cxrlens.registry import Registry

NetworkFactory = Callable[[str | os.PathLike | None, int], nn.Module]
BACKBONES: Registry[NetworkFactory] = Registry("backbone")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded or read."""


class Backbone(nn.Module):
    """A timm network returning ``[F1, F2, F3, F4]`` at strides 4, 8, 16, 32.

    ``channels`` lists their channel counts. ``trainable_from`` freezes the stem and the
    stages before that stage index (1..4; paper 003 trains only ResNet blocks 3-4, i.e. 3;
    5 freezes everything, for a head-only fine-tune); frozen BatchNorm layers stay in eval mode.
    """

    def __init__(self, name: str, weights: str | os.PathLike | None = None, in_chans: int = 1,
                 trainable_from: int = 0) -> None:
        super().__init__()
        self.name = name
        self.net = BACKBONES.get(name)(weights, in_chans)
        info = self.net.feature_info[-4:]
        self.stage_modules = [stage["module"] for stage in info]
        self.channels = [stage["num_chs"] for stage in info[:-1]] + [self.net.num_features]
        self.strides = [stage["reduction"] for stage in info]
        self._frozen: list[nn.Module] = []
        if trainable_from:
            self.freeze_before(trainable_from)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        final, intermediates = self.net.forward_intermediates(images, indices=4, intermediates_only=False)
        return [*intermediates[:-1], final]

    def freeze_before(self, stage: int) -> None:
        """Freeze every parameter registered before stage ``stage`` (1..4) begins; 5 freezes all."""
        if not 1 <= stage <= 5:
            raise ValueError(f"trainable_from must be a stage in 1..4, or 5 for the whole backbone, not {stage}")
        first_trainable = self.stage_modules[stage - 1] if stage <= 4 else None
        frozen_names = set()
        for name, module in self.net.named_modules():
            if first_trainable is not None and (name == first_trainable or name.startswith(first_trainable + ".")):
                break
            if name:
                frozen_names.add(name)
        self._frozen = [m for n, m in self.net.named_modules() if n in frozen_names]
        for module in self._frozen:
            for parameter in module.parameters(recurse=False):
                parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for module in self._frozen:
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self


def _hub_reachable(host: str = "huggingface.co") -> bool:
    """Whether the Hugging Face hub's name resolves (False at once on a machine without a network)."""
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def timm_network(name: str) -> NetworkFactory:
    """A factory for the timm network ``name`` with a headless, ``in_chans``-channel stem."""
    return lambda weights, in_chans: _create_timm(name, weights, in_chans)


def _create_timm(name: str, weights: str | os.PathLike | None, in_chans: int) -> nn.Module:
    options = {"in_chans": in_chans, "num_classes": 0, "global_pool": ""}
    if weights is None:
        return timm.create_model(name, pretrained=False, **options)
    if str(weights) == "imagenet":
        online = _hub_reachable()
        try:  # offline, the Hugging Face cache alone, at once (the hub client would retry for a minute)
            with contextlib.nullcontext() if online else mock.patch.object(hub_constants, "HF_HUB_OFFLINE", True):
                return timm.create_model(name, pretrained=True, **options)
        except Exception as error:  # noqa: BLE001 - hub, network and file errors vary by backend
            reason = (type(error).__name__ if online else
                      f"huggingface.co cannot be reached and they are not in {hub_constants.HF_HUB_CACHE}")
            raise WeightsUnavailableError(f"could not download ImageNet weights for {name} ({reason}); download them "
                                          "where there is internet and pass the file as the weights path") from None
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailableError(f"{path}: weights file does not exist")
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **options)
    except (RuntimeError, KeyError, ValueError, OSError) as error:
        raise WeightsUnavailableError(f"{path}: not ImageNet weights for {name} ({error})") from error


for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "wide_resnet50_2", "densenet121", "efficientnet_b4"):
    BACKBONES.add(_name, timm_network(_name))
