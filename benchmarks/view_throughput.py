"""How fast paper 000's two BYOL views are made: per CPU core in the workers, and batched on a device.

Reads ``--images`` images of nih-sample from a prepared cache at ``--size`` (256) px and
draws both views (the online view and the stronger target view of
:class:`cxrlens.config.PretrainConfig`, box mask carried through view 1) with one thread in
one process: images per second per core. A DataLoader scales this with its workers (one
core each), so keeping a GPU that trains at ``--gpu-rate`` images per second busy needs
``gpu_rate / per_core`` cores. The same figure with 2 DataLoader workers is printed as a
check of that scaling. ``views_on: device`` (:class:`cxrlens.ssl.device_views.DeviceViews`,
kornia) is timed on whole batches of ``--batch`` on ``--device`` (cpu: one thread, so
per core; cuda: the GPU, where the workers then only read the cache).

    python benchmarks/view_throughput.py [--size 256] [--images 400] [--gpu-rate 3000] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, default_collate
from torchvision.transforms import v2

from cxrlens.config import PretrainConfig
from cxrlens.data.cache import prepare_cache
from cxrlens.data.registry import open_sample
from cxrlens.data.torch_datasets import collate_skipping_failed
from cxrlens.paths import find_data_root
from cxrlens.ssl.augment import view_transform
from cxrlens.ssl.device_views import DeviceViews
from cxrlens.ssl.views import TwoViewDataset


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=find_data_root())
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--gpu-rate", type=float, default=3000.0, help="images/s of the GPU's training step")
    parser.add_argument("--device", default="cpu", help="where DeviceViews runs")
    parser.add_argument("--batch", type=int, default=128)
    return parser.parse_args()


def _rate(dataset: TwoViewDataset, images: int, workers: int) -> float:
    loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=workers, collate_fn=collate_skipping_failed,
                        generator=torch.Generator().manual_seed(0))
    seen, started = 0, None
    for batch in loader:
        if started is None:  # the first batch pays the workers' start-up
            started = time.perf_counter()
            continue
        seen += len(batch["view1"])
        if seen >= images:
            break
    return seen / (time.perf_counter() - started)


def _device_rate(dataset: TwoViewDataset, config: PretrainConfig, device: str, batch: int, images: int) -> float:
    """Images per second of DeviceViews on batches of the unaugmented images already on ``device``."""
    views = DeviceViews(config.online_view, config.target_view, dataset.cache.size)
    raw = default_collate([dataset[i % len(dataset)] for i in range(batch)])
    tensors = [raw[key].to(device) for key in ("view1", "view2", "box_mask")]
    views(*tensors)  # warm-up
    rounds = max(1, images // batch)
    _synchronise(device)
    started = time.perf_counter()
    for _ in range(rounds):
        views(*tensors)
    _synchronise(device)
    return rounds * batch / (time.perf_counter() - started)


def _synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    arguments = _arguments()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="cxrlens-views-"))
    try:
        cache = prepare_cache(open_sample(arguments.data_root, ["nih-sample"]), work / "cache", size=arguments.size)
        config = PretrainConfig()
        dataset = TwoViewDataset(cache, range(len(cache.items())), view_transform(config.online_view, cache.size),
                                 view_transform(config.target_view, cache.size), ["Atelectasis"])
        per_core = _rate(dataset, arguments.images, 0)
        two_workers = _rate(dataset, arguments.images, 2)
        raw = TwoViewDataset(cache, range(len(cache.items())), v2.Identity(), v2.Identity(), ["Atelectasis"])
        on_device = _device_rate(raw, config, arguments.device, arguments.batch, arguments.images)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"size": arguments.size, "views": "paper 000 BYOL online + target (2 per image)",
              "images_per_second_per_core": round(per_core, 1), "images_per_second_2_workers": round(two_workers, 1),
              "gpu_rate": arguments.gpu_rate, "cores_to_feed_gpu": math.ceil(arguments.gpu_rate / per_core),
              "device_views": {"device": arguments.device, "batch": arguments.batch,
                               "images_per_second": round(on_device, 1),
                               "device_seconds_per_step_second": round(arguments.gpu_rate / on_device, 3)}}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
