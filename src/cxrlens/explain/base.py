"""The CAM method interface and registry.

A CAM method turns one forward pass - the feature maps ``A`` (B x C x h x w) the model
exposes as ``cam_features`` and the class scores ``y = classify(A)`` - into one raw map per
requested class at feature resolution (B x P x h x w). :class:`CAMMethod` is that one
``maps`` hook; :class:`GradientCAM` narrows it to the one thing Grad-CAM-style methods
differ in, the channel weights from the gradients ``dy^c/dA`` (as pytorch-grad-cam's
``BaseCAM.get_cam_weights`` and torch-cam's ``_GradCAM._get_weights``). A method is
registered in :data:`METHODS` under its command-line name; the explainer
(:class:`cxrlens.explain.engine.CAMExplainer`) does everything around it (no-graph
backbone pass, refinement, upsampling, scaling).

Adding a method: a module with one registered subclass, imported in ``cxrlens/explain/__init__.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cxrlens.registry import Registry

_EPS = 1e-7
_GRADIENT_ELEMENTS = 2**26  # bound on classes x B x C x h x w gradient elements per autograd call


@dataclass(frozen=True)
class CAMInputs:
    """What a method sees: the normalised ``images``, their ``features`` and ``logits``, the
    ``classes`` to explain (P indices), and ``forward`` (images -> logits, for masked passes)."""

    model: nn.Module
    images: torch.Tensor
    features: torch.Tensor
    logits: torch.Tensor
    classes: torch.Tensor
    forward: Callable[[torch.Tensor], torch.Tensor]


class CAMMethod(ABC):
    """One way of weighing a model's feature maps into class heatmaps."""

    needs_gradients: ClassVar[bool] = False
    """Whether ``features`` must require gradients when ``logits`` are computed."""

    @abstractmethod
    def maps(self, inputs: CAMInputs) -> torch.Tensor:
        """Raw maps of ``inputs.classes`` at feature resolution, B x P x h x w (no graph kept)."""


class GradientCAM(CAMMethod):
    """Template for Grad-CAM-style methods: ``ReLU(sum_k w_k^c A^k)`` with weights from the gradients."""

    needs_gradients: ClassVar[bool] = True

    @abstractmethod
    def weights(self, gradients: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Channel weights P x B x C from ``gradients`` (P x B x C x h x w) and ``features`` (B x C x h x w)."""

    def maps(self, inputs: CAMInputs) -> torch.Tensor:
        features, classes = inputs.features, inputs.classes
        chunk = max(1, _GRADIENT_ELEMENTS // features.numel())
        parts = []
        for start in range(0, len(classes), chunk):  # chunks only bound memory: one call for 14 classes at 256 px
            retain = start + chunk < len(classes)
            gradients = class_gradients(inputs.logits, features, classes[start:start + chunk], retain_graph=retain)
            parts.append(self.weights(gradients, features.detach()))
        with torch.no_grad():
            return F.relu(weighted_sum(torch.cat(parts), features.detach()))


METHODS: Registry[type[CAMMethod]] = Registry("CAM method")


def class_gradients(logits: torch.Tensor, features: torch.Tensor, classes: torch.Tensor,
                    create_graph: bool = False, retain_graph: bool | None = None) -> torch.Tensor:
    """``d logits[:, c] / d features`` for every ``c`` in ``classes`` in one batched autograd call.

    Returns P x B x C x h x w. Each image's score depends only on its own feature map
    (the head has no batch coupling in eval mode), so one vector-Jacobian product per
    class gives every image's gradient.
    """
    selectors = F.one_hot(classes, logits.shape[1]).to(logits.dtype)                    # P x K
    grad_outputs = selectors[:, None, :].expand(-1, logits.shape[0], -1)                # P x B x K
    (gradients,) = torch.autograd.grad(logits, features, grad_outputs=grad_outputs, is_grads_batched=True,
                                       create_graph=create_graph, retain_graph=retain_graph)
    return gradients


def weighted_sum(weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``sum_k w_k^c A^k``: P x B x C weights and B x C x h x w maps -> B x P x h x w."""
    return torch.einsum("pbc,bchw->bphw", weights, features)


def scale_maps(maps: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """Min-max scale each H x W map of a B x K x H x W tensor to [0, 1]."""
    flat = maps.flatten(2)
    low = flat.min(dim=2, keepdim=True).values
    high = flat.max(dim=2, keepdim=True).values
    return ((flat - low) / (high - low + eps)).view_as(maps)
