"""Helper run by test_ssl under torchrun (or plain python for one process): SimCLR's NT-Xent
loss and gradients on a fixed batch, each rank taking its share, written to JSON.

    python tests/ddp_simclr.py OUT_PREFIX GATHER(0|1)
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

from cxrlens.config import SimCLRConfig
from cxrlens.models.backbones import Backbone
from cxrlens.ssl.simclr import SimCLR

BATCH = 8


def main() -> None:
    out, gather = sys.argv[1], sys.argv[2] == "1"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    config = SimCLRConfig(projection="bn", projection_hidden=64, projection_dim=16, temperature=0.5,
                          gather_distributed=gather)
    model = SimCLR(Backbone("resnet18"), config).eval()  # eval: BatchNorm uses running stats, identical on any split
    view1, view2 = torch.randn(2, BATCH, 1, 32, 32).unbind(0)
    share = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    loss = model(view1[share], view2[share])["loss"]
    loss.backward()
    gradient = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    if world > 1:  # what DDP does: average the ranks' losses (for logging) and gradients
        dist.all_reduce(gradient)
        gradient /= world
        loss = loss.detach().clone()
        dist.all_reduce(loss)
        loss /= world
    with open(f"{out}.rank{rank}", "w") as handle:
        json.dump({"loss": float(loss), "gradient": gradient.tolist()}, handle)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
