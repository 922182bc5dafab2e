"""The self-supervised method interface and registry.

A method is an ``nn.Module`` owning the encoder, its heads and its loss:
``forward(view1, view2, box_mask=None, box_findings=None)`` returns ``{"loss": total,
...other terms to log}`` for two normalised views of a batch, and ``after_step`` runs after
every optimizer step. :class:`MomentumMethod` is solo-learn's ``BaseMomentumMethod``:
target networks that follow online ones by an exponential moving average, declared as
``momentum_pairs``. Methods are registered in :data:`METHODS` under the ``name`` of their
config (:mod:`cxrlens.config`: ``SimCLRConfig``, ``BYOLConfig``, ``BYOLCAMConfig``) and
built by :func:`build_method`.

Adding a method: its config class in ``cxrlens/config.py`` (and in the ``MethodConfig``
union), and a module with one registered subclass imported in ``cxrlens/ssl/__init__.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from lightly.models.utils import update_momentum
from torch import nn

from cxrlens.config import SSLMethodConfig
from cxrlens.models.backbones import Backbone
from cxrlens.registry import Registry


class SSLMethod(nn.Module, ABC):
    """An encoder with one method's heads and loss (see the module docstring)."""

    def __init__(self, encoder: Backbone, config: SSLMethodConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = config

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The representation ``h``: global average pool of the encoder's last feature map."""
        return self.encoder(images)[-1].mean(dim=(2, 3))

    @abstractmethod
    def forward(self, view1: torch.Tensor, view2: torch.Tensor, box_mask: torch.Tensor | None = None,
                box_findings: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The loss terms of one batch of view pairs."""

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after optimizer step ``step`` of ``total_steps``."""


class MomentumMethod(SSLMethod):
    """A method with EMA targets: ``target <- tau target + (1 - tau) online`` after every step."""

    @abstractmethod
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, target) module pairs."""

    @abstractmethod
    def momentum(self, step: int, total_steps: int) -> float:
        """tau at optimizer step ``step``."""

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        tau = self.momentum(step, total_steps)
        for online, target in self.momentum_pairs():
            update_momentum(online, target, m=tau)


METHODS: Registry[type[SSLMethod]] = Registry("self-supervised method")


def build_method(config: SSLMethodConfig, encoder: Backbone) -> SSLMethod:
    """The registered method for ``config`` (its ``name``) around ``encoder``."""
    return METHODS.get(config.name)(encoder, config)
