"""The CAM engine: CAM, Grad-CAM, Grad-CAM++ and Score-CAM for every class of a batch at once.

cxrlens models expose the map CAMs are computed on (``cam_features``) and the rest of the
network (``classify``), so no forward hooks are registered and nothing can leak between
calls: the backbone runs once without a graph, and only the small head is differentiated.

For class ``c`` with score (logit) ``y^c`` and feature maps ``A^k`` (h x w):

* **CAM** (Zhou et al.; paper 000): ``sum_k w_ck A^k`` with the linear head's weights;
  for paper 004's saliency model, its probabilistic saliency map ``S`` itself.
* **Grad-CAM** (paper 000 eq. 1-2): ``alpha_k^c = mean_ij dy^c/dA^k_ij``,
  ``ReLU(sum_k alpha_k^c A^k)``. The gradients of all classes come from one batched
  autograd call (``is_grads_batched``), not a Python loop over classes.
* **Grad-CAM++** (Chattopadhay et al.): ``a_ij = g^2 / (2 g^2 + sum_ab A_ab g^3)``,
  ``w_k^c = sum_ij a_ij ReLU(g_ij)``, ``ReLU(sum_k w_k^c A^k)`` (g = dy^c/dA, as in
  pytorch-grad-cam).
* **Score-CAM** (Wang et al.): each channel, upsampled and min-max scaled, masks the input;
  the masked images' logits, softmaxed over channels, weight the channels. The masked
  forward passes are batched over channels and shared by all classes (pytorch-grad-cam
  reruns them for every class).

Maps are upsampled bilinearly to the input size and, by default, min-max scaled to
[0, 1] per map (pytorch-grad-cam's ``scale_cam_image``); ``normalize=False`` keeps raw
values. Returned tensors are detached: the engine holds no graph after a call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cxrlens.models.pcm import suppress_non_maximum

METHODS: tuple[str, ...] = ("cam", "gradcam", "gradcampp", "scorecam")
_EPS = 1e-7
_GRADIENT_ELEMENTS = 2**26  # bound on classes x B x C x h x w gradient elements per autograd call


@dataclass(frozen=True)
class Explanation:
    """``maps``: B x K x H x W heatmaps; ``logits``: B x K; ``classes``: the K class indices."""

    maps: torch.Tensor
    logits: torch.Tensor
    classes: tuple[int, ...]


class CAMExplainer:
    """``with CAMExplainer(model, "gradcam") as explain: result = explain(images)``.

    ``images`` are normalised model inputs (B x 1 x H x W). ``classes`` (default: all)
    selects the output classes to explain. The model is put in eval mode for the duration
    of the block and restored afterwards.

    Another runtime can run the backbone (ONNX Runtime in ``cxrlens predict --runtime
    onnx``): pass its feature maps to the call as ``features`` and, for Score-CAM's masked
    passes, its image -> logits function as ``forward``; only the small head then runs here.
    """

    def __init__(self, model: nn.Module, method: str = "gradcam", normalize: bool = True,
                 score_batch: int = 64, refiner: nn.Module | None = None,
                 forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")
        if not hasattr(model, "cam_features") or not hasattr(model, "classify"):
            raise TypeError("CAMExplainer needs a cxrlens classifier (cam_features + classify)")
        self.model = model
        self.method = method
        self.normalize = normalize
        self.score_batch = score_batch
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
            features = features.detach().requires_grad_(self.method in ("gradcam", "gradcampp"))
            logits = self.model.classify(features)
        everything = torch.arange(logits.shape[1], device=logits.device)
        chosen = everything if classes is None else torch.as_tensor(list(classes), device=logits.device,
                                                                     dtype=torch.long)
        computed = everything if self.refiner is not None else chosen  # NMS compares all classes
        if self.method == "cam":
            raw = self._cam(features, computed)
        elif self.method == "scorecam":
            raw = self._score_cam(images, features.detach(), computed)
        else:
            raw = self._gradient_cam(features, logits, computed)
        if self.refiner is not None:
            with torch.no_grad():
                nms = getattr(self.refiner, "nms", True)
                raw = self.refiner(features.detach(), suppress_non_maximum(raw, nms))[:, chosen]
        maps = F.interpolate(raw, size=images.shape[-2:], mode="bilinear", align_corners=False)
        if self.normalize:
            maps = scale_maps(maps)
        return Explanation(maps.detach(), logits.detach(), tuple(int(c) for c in chosen))

    def _cam(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if hasattr(self.model, "saliency"):  # paper 004: the model's own probabilistic map
                return torch.sigmoid(self.model.instance(features))[:, classes]
            fc = self.model.fc
            if getattr(self.model, "head", fc) is not fc:
                raise ValueError("CAM needs a linear head on the pooled map; use gradcam for an MLP head")
            return torch.einsum("kc,bchw->bkhw", fc.weight[classes], features)

    def _gradient_cam(self, features: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        chunk = max(1, _GRADIENT_ELEMENTS // features.numel())
        parts = []
        for start in range(0, len(classes), chunk):  # chunks only bound memory: one call for 14 classes at 256 px
            retain = start + chunk < len(classes)
            gradients = class_gradients(logits, features, classes[start:start + chunk], retain_graph=retain)
            parts.append(self._weights(gradients, features.detach()))
        weights = torch.cat(parts)                                                       # P x B x C
        with torch.no_grad():
            return F.relu(torch.einsum("pbc,bchw->bphw", weights, features.detach()))

    def _weights(self, gradients: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        if self.method == "gradcam":
            return gradients.mean(dim=(3, 4))                                            # eq. 1
        squared = gradients.pow(2)
        activation_sums = features.sum(dim=(2, 3))[None, :, :, None, None]
        a = squared / (2 * squared + activation_sums * squared * gradients + 1e-6)
        a = torch.where(gradients != 0, a, torch.zeros_like(a))
        return (F.relu(gradients) * a).sum(dim=(3, 4))

    @torch.no_grad()
    def _score_cam(self, images: torch.Tensor, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        masks = scale_maps(F.interpolate(features, size=images.shape[-2:], mode="bilinear", align_corners=True),
                           eps=1e-8)                                                     # B x C x H x W
        maps = []
        for image, image_masks, image_features in zip(images, masks, features):
            scores = []
            for start in range(0, image_masks.shape[0], self.score_batch):
                masked = image[None] * image_masks[start:start + self.score_batch, None]     # n x 1 x H x W
                scores.append(self.forward(masked)[:, classes])
            weights = torch.softmax(torch.cat(scores).float(), dim=0)                   # C x P
            maps.append(F.relu(torch.einsum("cp,chw->phw", weights, image_features)))
        return torch.stack(maps)


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


def gradcam(features: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor, relu: bool = True,
            create_graph: bool = False) -> torch.Tensor:
    """Grad-CAM (paper 000 eq. 1-2) at feature resolution, B x P x h x w.

    With ``create_graph`` the maps stay differentiable w.r.t. everything upstream of
    ``features`` (paper 000's CAM loss trains the encoder through them).
    """
    if features.dim() != 4 or logits.dim() != 2 or logits.shape[0] != features.shape[0]:
        raise ValueError(f"expected features B x C x h x w and logits B x K, got {tuple(features.shape)} "
                         f"and {tuple(logits.shape)}")
    alpha = class_gradients(logits, features, classes, create_graph, retain_graph=create_graph).mean(dim=(3, 4))
    cams = torch.einsum("pbc,bchw->bphw", alpha, features)
    return F.relu(cams) if relu else cams


def scale_maps(maps: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """Min-max scale each H x W map of a B x K x H x W tensor to [0, 1]."""
    flat = maps.flatten(2)
    low = flat.min(dim=2, keepdim=True).values
    high = flat.max(dim=2, keepdim=True).values
    return ((flat - low) / (high - low + eps)).view_as(maps)


def explain(model: nn.Module, images: torch.Tensor, method: str = "gradcam",
            classes: Sequence[int] | None = None, normalize: bool = True) -> Explanation:
    """One-shot :class:`CAMExplainer` call."""
    with CAMExplainer(model, method, normalize) as explainer:
        return explainer(images, classes)
