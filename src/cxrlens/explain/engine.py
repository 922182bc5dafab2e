"""The CAM engine: any registered method for every class of a batch at once.

cxrlens models expose the map CAMs are computed on (``cam_features``), the rest of the
network (``classify``) and their own class maps (``class_maps``), so no forward hooks are
registered and nothing can leak between calls: the backbone runs once without a graph,
and only the small head is differentiated. The method (:mod:`cxrlens.explain.base`) turns
that into raw maps; an optional PCM refines them (paper 003 eq. 2, after non-maximum
suppression over all classes); maps are then upsampled bilinearly to the input size and,
by default, min-max scaled to [0, 1] per map (pytorch-grad-cam's ``scale_cam_image``;
``normalize=False`` keeps raw values). Returned tensors are detached: the engine holds no
graph after a call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cxrlens.explain.base import METHODS, CAMInputs, CAMMethod, scale_maps
from cxrlens.models.pcm import PixelCorrelationModule


@dataclass(frozen=True)
class Explanation:
    """``maps``: B x K x H x W heatmaps; ``logits``: B x K; ``classes``: the K class indices."""

    maps: torch.Tensor
    logits: torch.Tensor
    classes: tuple[int, ...]


class CAMExplainer:
    """``with CAMExplainer(model, "gradcam") as explain: result = explain(images)``.

    ``method`` is a registered name (:data:`cxrlens.explain.base.METHODS`) or a configured
    :class:`CAMMethod`. ``images`` are normalised model inputs (B x 1 x H x W). ``classes``
    (default: all) selects the output classes to explain. The model is put in eval mode
    for the duration of the block and restored afterwards.

    Another runtime can run the backbone (ONNX Runtime in ``cxrlens predict --runtime
    onnx``): pass its feature maps to the call as ``features`` and, for Score-CAM's masked
    passes, its image -> logits function as ``forward``; only the small head then runs here.
    """

    def __init__(self, model: nn.Module, method: str | CAMMethod = "gradcam", normalize: bool = True,
                 refiner: PixelCorrelationModule | None = None,
                 forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.method = METHODS.get(method)() if isinstance(method, str) else method
        if not all(hasattr(model, name) for name in ("cam_features", "classify", "class_maps")):
            raise TypeError("CAMExplainer needs a cxrlens classifier (cam_features, classify and class_maps)")
        self.model = model
        self.normalize = normalize
        self.refiner = refiner
        self.forward = forward or model
        self._was_training: bool | None = None

    def __enter__(self) -> CAMExplainer:
        self._was_training = self.model.training
        self.model.eval()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._was_training:
            self.model.train()
        self._was_training = None

    def __call__(self, images: torch.Tensor, classes: Sequence[int] | None = None,
                 features: torch.Tensor | None = None) -> Explanation:
        if images.dim() != 4:
            raise ValueError(f"expected images B x C x H x W, got shape {tuple(images.shape)}")
        if features is None:
            with torch.no_grad():
                features = self.model.cam_features(images)
        with torch.enable_grad():
            features = features.detach().requires_grad_(self.method.needs_gradients)
            logits = self.model.classify(features)
        everything = torch.arange(logits.shape[1], device=logits.device)
        chosen = everything if classes is None else torch.as_tensor(list(classes), device=logits.device,
                                                                     dtype=torch.long)
        computed = everything if self.refiner is not None else chosen  # NMS compares all classes
        raw = self.method.maps(CAMInputs(self.model, images, features, logits, computed, self.forward))
        if self.refiner is not None:
            with torch.no_grad():
                raw = self.refiner(features.detach(), self.refiner.suppress(raw))[:, chosen]
        maps = F.interpolate(raw, size=images.shape[-2:], mode="bilinear", align_corners=False)
        if self.normalize:
            maps = scale_maps(maps)
        return Explanation(maps.detach(), logits.detach(), tuple(int(c) for c in chosen))


def explain(model: nn.Module, images: torch.Tensor, method: str | CAMMethod = "gradcam",
            classes: Sequence[int] | None = None, normalize: bool = True) -> Explanation:
    """One-shot :class:`CAMExplainer` call."""
    with CAMExplainer(model, method, normalize) as explainer:
        return explainer(images, classes)
