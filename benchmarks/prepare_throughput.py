"""``data prepare`` throughput on full-size NIH radiographs, per core, and the time projected for whole datasets.

NIH distributes 1024 x 1024 8-bit PNGs; the sample set keeps its boxed images at 512 px, so
``--images`` of them are upscaled to 1024 px and written as PNGs to a temporary folder
(never into the repository) to stand in for the originals: the same decoder, the same
file size class. :func:`cxrlens.data.cache.prepare_cache` then decodes, resizes (to
``--size``) and writes them into a cache with 1 worker and with ``--workers`` workers;
images per second per worker, and the projected wall time for NIH ChestX-ray14's 112,120
images and CheXpert's 224,316 on ``--cores`` cores (assuming CheXpert's full-resolution
JPEGs decode at the rate measured here for PNGs, which the note beside the figure says).

    python benchmarks/prepare_throughput.py [--images 200] [--size 256] [--workers 2] [--cores 16]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import cv2

from cxrlens.data import NIHChestXray14
from cxrlens.data.cache import prepare_cache
from cxrlens.data.folder import ImageFolder
from cxrlens.paths import find_data_root

DATASET_IMAGES = {"NIH ChestX-ray14": 112_120, "CheXpert v1.0": 224_316}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=find_data_root())
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=16)
    return parser.parse_args()


def _full_size_pngs(data_root: Path, count: int, folder: Path) -> list[Path]:
    """``count`` boxed NIH images upscaled to NIH's 1024 x 1024 and written as 8-bit PNGs under ``folder``."""
    folder.mkdir(parents=True)
    written = []
    for item in NIHChestXray14(data_root / "nih-chestxray14-bbox").items[:count]:
        pixels = cv2.imread(str(item.path), cv2.IMREAD_GRAYSCALE)
        path = folder / item.path.name
        cv2.imwrite(str(path), cv2.resize(pixels, (1024, 1024), interpolation=cv2.INTER_CUBIC))
        written.append(path)
    return written


def _rate(folder: Path, cache: Path, size: int, workers: int) -> float:
    dataset = ImageFolder(folder)
    started = time.perf_counter()
    prepare_cache(dataset, cache, size=size, workers=workers)
    return len(dataset.items) / (time.perf_counter() - started)


def main() -> None:
    args = _arguments()
    work = Path(tempfile.mkdtemp(prefix="cxrlens-prepare-"))
    try:
        pngs = _full_size_pngs(args.data_root, args.images, work / "pngs")
        megabytes = sum(path.stat().st_size for path in pngs) / len(pngs) / 1e6
        one = _rate(work / "pngs", work / "cache-1", args.size, 1)
        many = _rate(work / "pngs", work / "cache-n", args.size, args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    projected = {name: round(count / (one * args.cores) / 60, 1) for name, count in DATASET_IMAGES.items()}
    result = {"images": len(pngs), "source": "1024 x 1024 8-bit PNG", "mean_png_mb": round(megabytes, 2),
              "cache_size": args.size, "images_per_second_1_worker": round(one, 1),
              f"images_per_second_{args.workers}_workers": round(many, 1),
              "scaling": round(many / one / args.workers, 2),
              f"projected_minutes_on_{args.cores}_cores": projected,
              "note": "CheXpert projected at the PNG rate; its full-resolution JPEGs are larger (about 2300 x 2800)"}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
