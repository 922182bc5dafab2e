"""What a model costs: its parameters and its inference time per image (paper 003, Table 4).

Paper 003 times one 256 x 256 image through each network on a P100; here the evaluated
model is timed at the evaluation cache's size on the evaluation's device, batch 1, the
median of ``repeats`` forward passes (5) after ``warmup`` untimed ones (1), so that its run folder
says what its Table 4 row would be on this machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn


def parameter_count(model: nn.Module) -> int:
    """Every parameter of ``model``, trainable or not (paper 003 counts the whole network with its head)."""
    return sum(parameter.numel() for parameter in model.parameters())


@torch.no_grad()
def median_ms(run: Callable[[], object], device: str = "cpu", repeats: int = 5, warmup: int = 1) -> float:
    """Median milliseconds of ``run()`` over ``repeats`` calls after ``warmup`` untimed ones, without gradients (on
    a GPU, synchronised around each call)."""
    times = []
    for attempt in range(warmup + repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if attempt >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def inference_ms(model: nn.Module, size: int, device: str, repeats: int = 5, warmup: int = 1) -> float:
    """Median milliseconds of one forward pass of a 1 x 1 x ``size`` x ``size`` image on ``device``."""
    model = model.to(device).eval()
    image = torch.rand(1, 1, size, size, device=device)
    return median_ms(lambda: model(image), device, repeats, warmup)


def model_cost(model: nn.Module, size: int, device: str, repeats: int = 5) -> dict:
    """``{"parameters", "inference_ms", "input", "device", "batch"}`` of ``model`` (a Table 4 row)."""
    return {"parameters": parameter_count(model), "inference_ms": round(inference_ms(model, size, device, repeats), 3),
            "input": f"1 x {size} x {size}", "device": device, "batch": 1, "repeats": repeats}
