"""Helper run by test_engine under torchrun or plain python: a few training steps, losses to JSON.

    python tests/ddp_run.py CACHE OUT.json BATCH_SIZE DEVICES STEPS
"""

from __future__ import annotations

import json
import sys

import torch

from cxrlens.config import ModelConfig, TrainConfig
from cxrlens.data.cache import PreparedCache
from cxrlens.data.torch_datasets import CachedImageDataset
from cxrlens.models import build_model
from cxrlens.train.engine import StepEvent, fit, make_fabric


def main() -> None:
    cache_dir, out, batch_size, devices, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    cache = PreparedCache(cache_dir)
    ready = cache.ready_indices()
    config = TrainConfig(epochs=1, batch_size=batch_size, accumulate=1, num_workers=0, loss="bce", scheduler="none",
                         lr=1e-3, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                         freeze_batchnorm=True, max_steps_per_epoch=steps)
    fabric = make_fabric(config)
    fabric.launch()
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", num_classes=len(cache.classes)))
    losses: list[float] = []
    fit(model, CachedImageDataset(cache, ready), CachedImageDataset(cache, ready[:32]), config, f"{out}.run{fabric.global_rank}",
        fabric=fabric, callbacks=[lambda event: losses.append(event.loss)], show_progress=False)
    weights = next(iter(model.parameters())).detach().flatten()[:50].tolist()
    with open(f"{out}.rank{fabric.global_rank}", "w") as handle:
        json.dump({"losses": losses, "weights": weights}, handle)


if __name__ == "__main__":
    main()
