"""A classifier prepared for inference: batch norms folded into their convolutions, channels-last on CPUs.

Measured on the 2-core CI machine (ResNet-50, 256 px, ``benchmarks/latency.py``), PyTorch's
eager model got *slower* per image as the batch grew (127 ms/image at batch 32 against 80
at batch 1): on CPUs oneDNN runs convolutions much faster on channels-last (NHWC) tensors
than on NCHW ones, and every eval-mode batch norm is one more pass over the activations.
:func:`inference_model` returns a copy that folds each ``BatchNorm2d`` into the
convolution that feeds it (``W' = W gamma / sigma``, ``b' = (b - mu) gamma / sigma +
beta``, :func:`torch.nn.utils.fusion.fuse_conv_bn_eval`) and, on a CPU, stores its
weights channels-last; its outputs equal the model's up to float rounding.

Which batch norm follows which convolution is read off one forward pass (forward hooks:
a ``BatchNorm2d`` whose input is the very tensor a ``Conv2d`` returned); a convolution
whose output also feeds anything else cannot be folded that way, so the folded copy is
checked against the model on a batch of random images and the model is returned unfolded
(still channels-last) when they differ. Batch norms with activations inside
(``BatchNormAct2d`` of timm's EfficientNets) are subclasses and are left as they are.

``compile=True`` (``--compile`` of predict, evaluate and serve) also runs the feature
extractor through ``torch.compile`` with frozen weights: 58 against 70 ms per image for a
ResNet-50 at batch 32 on 2 cores, within 1.2x of ONNX Runtime, after 4-10 s of compiling
per input shape; it is off by default because a few hundred images do not repay that.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_TOLERANCE = 1e-4  # relative to the largest output; float32 rounding of a folded ResNet-50 is ~1e-7


def _conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """``(conv name, batch norm name)`` for each ``BatchNorm2d`` fed directly by a ``Conv2d`` in ``model(example)``."""
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # the outputs stay referenced, so no id is reused in the pass
    pairs: list[tuple[str, str]] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(
                lambda _module, _inputs, output, name=name: produced.__setitem__(id(output), (name, output))))
        elif type(module) is nn.BatchNorm2d:
            handles.append(module.register_forward_pre_hook(
                lambda _module, inputs, name=name: pairs.append((produced[id(inputs[0])][0], name))
                if id(inputs[0]) in produced else None))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return pairs


def _folded(model: nn.Module, pairs: list[tuple[str, str]]) -> nn.Module:
    folded = copy.deepcopy(model)
    modules = dict(folded.named_modules())
    for conv_name, bn_name in dict.fromkeys(pairs):  # a module called twice is folded once
        parent_name, _, attribute = bn_name.rpartition(".")
        conv_parent, _, conv_attribute = conv_name.rpartition(".")
        setattr(modules[conv_parent], conv_attribute, fuse_conv_bn_eval(modules[conv_name], modules[bn_name]))
        setattr(modules[parent_name], attribute, nn.Identity())
    return folded


def _outputs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        output = model(images)
    return (output[0] if isinstance(output, tuple) else output).float()


class CompiledExtractor(nn.Module):
    """A feature extractor run through ``torch.compile`` (inductor) with its weights frozen into the compiled graph
    (inductor's ``freezing``: constant-folded, prepacked for oneDNN), for passes without gradients; a pass with
    gradients runs the extractor as it is. Each new input shape (batch size) compiles once more."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor
        # not a submodule (no second copy of the weights); one static graph per input shape: inductor's dynamic-batch
        # graphs of a channels-last network failed a stride check in torch 2.14
        object.__setattr__(self, "_compiled", torch.compile(extractor, dynamic=False))

    def forward(self, images: torch.Tensor) -> object:
        if torch.is_grad_enabled():
            return self.extractor(images)
        with torch._inductor.config.patch(freezing=True):  # per call: a new input shape compiles under it too
            return self._compiled(images)


def inference_model(model: nn.Module, size: int, in_chans: int = 1, compile: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` for inference on its current device (see the module docstring); ``size`` and
    ``in_chans`` describe its input, for the forward passes that find and check the folds. With ``compile`` its
    feature extractor is also compiled (:class:`CompiledExtractor`: a few seconds per input shape up front, then
    1.2x faster for a ResNet-50 at batch 32 on 2 CPU cores); where compiling fails or changes the outputs, a warning
    says so and the model runs uncompiled."""
    model = model.eval()
    device = next(model.parameters()).device
    images = torch.randn(2, in_chans, size, size, device=device)
    pairs = _conv_bn_pairs(model, images[:1])
    prepared = _folded(model, pairs) if pairs else copy.deepcopy(model)
    expected = _outputs(model, images)
    if pairs and not _same(_outputs(prepared, images), expected):
        prepared = copy.deepcopy(model)
    if device.type == "cpu":
        prepared = prepared.to(memory_format=torch.channels_last)
    if compile:
        _compile_extractor(prepared, images, expected)
    return prepared.eval()


def _same(outputs: torch.Tensor, expected: torch.Tensor) -> bool:
    return bool((outputs - expected).abs().max() <= _TOLERANCE * max(expected.abs().max(), 1.0))


def _compile_extractor(model: nn.Module, images: torch.Tensor, expected: torch.Tensor) -> None:
    """Swap ``model.extractor`` for its :class:`CompiledExtractor` when that compiles and keeps the outputs."""
    extractor = getattr(model, "extractor", None)
    if not isinstance(extractor, nn.Module):
        warnings.warn(f"torch.compile was asked for but not used ({type(model).__name__} has no feature extractor); "
                      "the model runs uncompiled", stacklevel=3)
        return
    try:
        model.extractor = CompiledExtractor(extractor)
        kept = _same(_outputs(model, images), expected)
        problem = "it changed the outputs"
    except Exception as error:  # noqa: BLE001 - inductor raises many kinds (no C++ compiler, an unsupported op)
        kept, problem = False, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    if not kept:
        model.extractor = extractor
        warnings.warn(f"torch.compile was asked for but not used ({problem}); the model runs uncompiled", stacklevel=3)
