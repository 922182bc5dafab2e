"""The prepared cache on real images: geometry, resume, refusal to clobber, torch datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cxrlens.data import NIHChestXray14, open_dataset
from cxrlens.data.cache import DONE, FAILED, FLOORS_FOLDER, CacheMismatchError, prepare_cache
from cxrlens.data.preprocess import fit_geometry, fit_image, to_unit_float
from cxrlens.data.records import CXRDataset
from cxrlens.data.torch_datasets import CachedImageDataset, ImageFileDataset, collate_skipping_failed
from cxrlens.data.boxes import Box


def _subset(dataset: CXRDataset, count: int) -> CXRDataset:
    return CXRDataset(dataset.classes, dataset.items[:count], dataset.problems, name=dataset.name)


def test_nih_boxes_in_cache_pixels(tmp_path: Path, nih_bbox_root: Path) -> None:
    dataset = _subset(NIHChestXray14(nih_bbox_root), 24)
    cache = prepare_cache(dataset, tmp_path / "c", size=128, workers=2)
    assert len(cache.ready_indices()) == 24
    for index, item in enumerate(dataset.items):
        assert tuple(cache.source_size[index]) == (512, 512)
        for source, cached in zip(item.boxes, cache.boxes(index)):
            assert cached.x == pytest.approx(source.x / 4) and cached.h == pytest.approx(source.h / 4)
            back = cache.geometry(index).to_source(cached)
            assert back.x == pytest.approx(source.x) and back.w == pytest.approx(source.w)
    assert cache.items()[3].patient_id == dataset.items[3].patient_id
    np.testing.assert_array_equal(cache.labels, dataset.label_matrix())


def test_pad_geometry_keeps_aspect() -> None:
    image = np.zeros((100, 200), dtype=np.float32)
    image[40:60, 90:110] = 1.0
    pixels = fit_image(image, 64, "pad")
    geometry = fit_geometry(200, 100, 64, "pad")
    box = geometry.to_cache(Box("Mass", 90, 40, 20, 20))
    assert (box.x, box.y, box.w, box.h) == pytest.approx((28.8, 28.8, 6.4, 6.4))
    assert pixels[:16].max() == 0 and pixels[48:].max() == 0  # black bars
    assert pixels[int(box.y) + 2, int(box.x) + 2] == 255


def test_resume_after_interrupt_finishes_only_missing(tmp_path: Path, kermany_root: Path) -> None:
    dataset = _subset(open_dataset("kermany", [kermany_root]), 200)
    calls: list[int] = []

    def interrupt(done: int, total: int) -> None:
        calls.append(done)
        if done >= 60:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_cache(dataset, tmp_path / "c", size=32, workers=2, progress=interrupt)
    status = np.fromfile(tmp_path / "c" / "status.u8", dtype=np.uint8)
    done_before = np.flatnonzero(status == DONE)
    assert 60 <= len(done_before) < 200
    marker = int(done_before[0])  # mark a finished image: a resume must not decode it again
    images = np.memmap(tmp_path / "c" / "images.u8", dtype=np.uint8, mode="r+", shape=(200, 32, 32))
    images[marker] = 7
    images.flush()
    resumed: list[int] = []
    cache = prepare_cache(dataset, tmp_path / "c", size=32, workers=2, progress=lambda d, t: resumed.append(d))
    assert resumed[0] == len(done_before) and resumed[-1] == 200
    assert len(cache.ready_indices()) == 200 and (cache.images[marker] == 7).all()
    reference = fit_image(__import__("cxrlens.data.io", fromlist=["read_image"]).read_image(dataset.items[-1].path), 32, "squash")
    np.testing.assert_array_equal(cache.images[199], reference)


def test_existing_cache_never_clobbered(tmp_path: Path, kermany_root: Path) -> None:
    dataset = _subset(open_dataset("kermany", [kermany_root]), 10)
    prepare_cache(dataset, tmp_path / "c", size=32, workers=1)
    with pytest.raises(CacheMismatchError, match="choose another folder or pass --overwrite"):
        prepare_cache(dataset, tmp_path / "c", size=64, workers=1)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "precious.ckpt").write_text("weights")
    with pytest.raises(CacheMismatchError, match="not a cache"):
        prepare_cache(dataset, tmp_path / "user", size=32, workers=1)
    assert (tmp_path / "user" / "precious.ckpt").exists()
    (tmp_path / "c" / FLOORS_FOLDER).mkdir()  # floors fitted on the old images go with them
    (tmp_path / "c" / FLOORS_FOLDER / "old.npz").write_bytes(b"floor")
    cache = prepare_cache(dataset, tmp_path / "c", size=64, workers=1, overwrite=True)
    assert cache.size == 64 and not (tmp_path / "c" / FLOORS_FOLDER).exists()


def test_failed_image_recorded_and_excluded(tmp_path: Path, kermany_root: Path) -> None:
    import shutil

    dataset = _subset(open_dataset("kermany", [kermany_root]), 6)
    folder = tmp_path / "copy"
    folder.mkdir()
    items = []
    for item in dataset.items:
        shutil.copy(item.path, folder / item.path.name)
        items.append(type(item)(**{**item.__dict__, "path": folder / item.path.name}))
    broken = items[2].path
    broken.write_bytes(broken.read_bytes()[:300])  # truncated JPEG
    copy = CXRDataset(dataset.classes, items, dataset.problems, name="kermany")
    cache = prepare_cache(copy, tmp_path / "c", size=32, workers=1)
    assert cache.status[2] == FAILED and len(cache.ready_indices()) == 5
    failure = cache.failures()[0]
    assert failure["index"] == 2 and failure["path"] == str(broken) and "truncated" in failure["reason"]
    with pytest.raises(ValueError, match="failed to decode"):
        CachedImageDataset(cache, indices=[0, 2])
    # decoding from files instead: the bad image is skipped and counted, the epoch goes on
    loader = DataLoader(ImageFileDataset(items, 32), batch_size=3, collate_fn=collate_skipping_failed)
    batches = list(loader)
    assert sum(b["skipped"] for b in batches) == 1 and sum(len(b["image"]) for b in batches) == 5


def test_cached_dataset_matches_file_dataset(tmp_path: Path, nih_sample_root: Path, cohen_root: Path) -> None:
    dataset = _subset(open_dataset("nih", [nih_sample_root]), 16)
    cache = prepare_cache(dataset, tmp_path / "c", size=64, workers=2)
    cached = CachedImageDataset(cache)
    files = ImageFileDataset(dataset.items, 64)
    for index in (0, 7, 15):
        a, b = cached[index], files[index]
        assert a["image"].shape == (1, 64, 64) and a["image"].dtype == torch.uint8
        torch.testing.assert_close(a["image"], b["image"])
        torch.testing.assert_close(a["labels"], b["labels"])
    loader = DataLoader(cached, batch_size=8, num_workers=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 1, 64, 64) and batch["mask"].dtype == torch.bool
    images = to_unit_float(batch["image"])
    assert images.dtype == torch.float32 and 0 <= images.min() < images.max() <= 1
    # non-square Cohen images keep their source size for mapping boxes back
    cohen = _subset(open_dataset("cohen", [cohen_root]), 8)
    cohen_cache = prepare_cache(cohen, tmp_path / "cohen", size=64, fit="pad", workers=1)
    sizes = np.asarray(cohen_cache.source_size)
    assert (sizes > 0).all() and json.loads((tmp_path / "cohen" / "index.json").read_text())["fit"] == "pad"
