"""CPU training speed of the quickstart's settings against plain float32, in the same process.

Times optimizer steps of a ResNet-18 (14 outputs, 1-channel input, batch 64) at 64, 96 and
128 px in interleaved rounds, for float32 NCHW (PyTorch's default) and for the quickstart's
``precision: bf16-mixed`` + ``channels_last: true`` (bf16 autocast only where oneDNN has
bfloat16 kernels: AVX512-BF16 or AMX; elsewhere the trainer falls back to float32 and the
ratio is about 1). Prints images per second and the ratio.

    python benchmarks/training_precision.py [--rounds 3] [--batch 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cxrlens.models import Backbone
from cxrlens.train.trainer import training_precision


def _step_time(model: torch.nn.Module, images: torch.Tensor, bf16: bool, steps: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    head = torch.nn.Linear(512, 14)
    started = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            features = model(images)[-1].mean(dim=(2, 3))
            loss = head(features).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    bf16 = training_precision("bf16-mixed", "cpu") == "bf16-mixed"
    print(f"{torch.get_num_threads()} threads; oneDNN bfloat16: {'yes' if bf16 else 'no (float32 fallback)'}")
    print("| size | float32 NCHW (img/s) | bf16-mixed + channels_last (img/s) | speed-up |\n|---|---|---|---|")
    for size in (64, 96, 128):
        images = torch.randn(args.batch, 1, size, size)
        plain = Backbone("resnet18")
        fast = Backbone("resnet18").to(memory_format=torch.channels_last)
        fast.load_state_dict(plain.state_dict())
        _step_time(plain, images, False, 1), _step_time(fast, images, bf16, 1)  # warm-up
        times = {"plain": [], "fast": []}
        for _ in range(args.rounds):  # interleaved: drift of the machine hits both alike
            times["plain"].append(_step_time(plain, images, False, args.steps))
            times["fast"].append(_step_time(fast, images, bf16, args.steps))
        plain_rate, fast_rate = (args.batch / np.median(times[key]) for key in ("plain", "fast"))
        print(f"| {size} | {plain_rate:.1f} | {fast_rate:.1f} | {fast_rate / plain_rate:.2f}x |")


if __name__ == "__main__":
    main()
