"""Helper run by test_engine under torchrun or plain python: a few training steps, losses to JSON.

    python tests/ddp_run.py CACHE OUT.json BATCH_SIZE DEVICES STEPS

:func:`supervised_objective` is also what test_engine trains with.
"""

from __future__ import annotations

import json
import sys

import torch

from cxrlens.checkpoints import ClassifierCheckpoint
from cxrlens.config import InputSpec, ModelConfig, Normalisation, TrainConfig
from cxrlens.data.cache import PreparedCache
from cxrlens.data.torch_datasets import CachedImageDataset
from cxrlens.models import build_model
from cxrlens.train.objectives import LossFunction, SupervisedObjective, make_loss
from cxrlens.train.trainer import Trainer, launch

MODEL = ModelConfig(backbone="resnet18", num_classes=14)


def supervised_objective(cache: PreparedCache, config: TrainConfig, loss_fn: LossFunction | None = None,
                         ) -> SupervisedObjective:
    """Classification on ``cache`` with ``config``'s loss (or ``loss_fn``), saving :data:`MODEL` checkpoints."""
    describes = ClassifierCheckpoint(state={}, network=MODEL, classes=list(cache.classes),
                                     input=InputSpec(size=cache.size, fit=cache.fit), normalisation=Normalisation())
    return SupervisedObjective(loss_fn or make_loss(config), describes)


def main() -> None:
    cache_dir, out, batch_size, devices, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    cache = PreparedCache(cache_dir)
    ready = cache.ready_indices()
    config = TrainConfig(epochs=1, batch_size=batch_size, accumulate=1, num_workers=0, loss="bce", scheduler="none",
                         lr=1e-3, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                         freeze_batchnorm=True, max_steps_per_epoch=steps)
    fabric = launch(config)
    torch.manual_seed(0)
    model = build_model(MODEL.model_copy(update={"num_classes": len(cache.classes)}))
    losses: list[float] = []
    trainer = Trainer(config, f"{out}.run{fabric.global_rank}", fabric, callbacks=[lambda event: losses.append(event.loss)],
                      show_progress=False)
    trainer.fit(model, supervised_objective(cache, config), CachedImageDataset(cache, ready),
                CachedImageDataset(cache, ready[:32]))
    weights = next(iter(model.parameters())).detach().flatten()[:50].tolist()
    with open(f"{out}.rank{fabric.global_rank}", "w") as handle:
        json.dump({"losses": losses, "weights": weights}, handle)


if __name__ == "__main__":
    main()
