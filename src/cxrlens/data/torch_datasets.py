"""PyTorch datasets over the prepared cache (fast path) and over image files (no cache).

Both yield the same sample dict::

    {"image": uint8 Tensor 1 x S x S, "labels": float32 Tensor[K], "mask": bool Tensor[K], "index": int}

A cached dataset asked for ``box_findings`` adds the image's radiologist boxes of those
findings for paper 000's CAM loss: ``box_mask`` (uint8 1 x S x S, their union, moved with
the image by the same geometric transform) and ``box_findings`` (float32 multi-hot).

Images stay uint8 until they reach the consumer: four times less traffic between
DataLoader workers and the main process, and to the GPU. There
:func:`cxrlens.data.preprocess.normalise` turns a batch into the model input, on whatever
device the batch is on. Per-sample
``transform`` callables receive and return uint8 tensors (torchvision.transforms.v2
geometric transforms keep the dtype).

:class:`ImageFileDataset` returns None for an image that fails to decode, after logging
it once; :func:`collate_skipping_failed` drops such samples and reports how many in the
batch's ``"skipped"`` entry, so one bad file never crashes an epoch and is still counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate
from torchvision import tv_tensors

from cxrlens.data.boxes import union_mask
from cxrlens.data.cache import PreparedCache
from cxrlens.data.io import CXRImageError, read_image
from cxrlens.data.preprocess import Fit, fit_image
from cxrlens.data.records import CXRItem, boxed_positions

log = logging.getLogger(__name__)
Sample = dict[str, object]
Transform = Callable[[torch.Tensor], torch.Tensor]


def box_union_mask(cache: PreparedCache, index: int, findings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The union of item ``index``'s boxes for ``findings`` in cache pixels, and their multi-hot (both all zero for an
    image without such a box)."""
    boxes = [box for box in cache.boxes(index) if box.finding in findings]
    mask = union_mask(boxes, cache.size, cache.size)
    present = np.zeros(len(findings), dtype=np.float32)
    for box in boxes:
        present[list(findings).index(box.finding)] = 1.0
    return mask, present


def cached_boxed_positions(cache: PreparedCache, indices: Sequence[int], findings: Sequence[str]) -> np.ndarray:
    """:func:`cxrlens.data.records.boxed_positions` of the cache's items (not built when no finding is asked for)."""
    return boxed_positions(cache.items(), indices, findings) if findings else np.zeros(len(indices), dtype=bool)


class CachedImageDataset(Dataset):
    """Samples read straight from a :class:`PreparedCache` memory map (no image decoding).

    ``indices`` selects items (a split); by default every item whose pixels are ready.
    ``box_findings``: add each image's box mask and findings (see the module docstring).
    """

    def __init__(
        self, cache: PreparedCache, indices: Sequence[int] | None = None, transform: Transform | None = None,
        box_findings: Sequence[str] = (),
    ) -> None:
        self.cache = cache
        ready = cache.ready_indices()
        if indices is None:
            self.indices = ready
        else:
            self.indices = np.asarray(indices, dtype=np.int64)
            not_ready = np.setdiff1d(self.indices, ready)
            if len(not_ready):
                raise ValueError(
                    f"{cache.directory}: {len(not_ready)} selected item(s) failed to decode or are not "
                    f"prepared yet (first index {int(not_ready[0])}); select from cache.ready_indices()"
                )
        self.transform = transform
        self.box_findings = list(box_findings)
        self.boxed = cached_boxed_positions(cache, self.indices, self.box_findings)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Sample:
        index = int(self.indices[position])
        image = torch.from_numpy(np.array(self.cache.images[index])).unsqueeze_(0)
        sample: Sample = {"labels": torch.from_numpy(self.cache.labels[index].copy()),
                          "mask": torch.from_numpy(self.cache.masks[index].copy()), "index": index}
        if not self.box_findings:
            sample["image"] = image if self.transform is None else self.transform(image)
            return sample
        mask, present = box_union_mask(self.cache, index, self.box_findings)
        image, box_mask = tv_tensors.Image(image), tv_tensors.Mask(torch.from_numpy(mask)[None])
        if self.transform is not None:
            image, box_mask = self.transform(image, box_mask)
        sample.update(image=image.as_subclass(torch.Tensor), box_mask=box_mask.as_subclass(torch.Tensor),
                      box_findings=torch.from_numpy(present))
        return sample


class ImageFileDataset(Dataset):
    """Samples decoded from the original files, resized like the cache; None if unreadable."""

    def __init__(
        self, items: Sequence[CXRItem], size: int, fit: Fit = "squash", transform: Transform | None = None
    ) -> None:
        self.items = list(items)
        self.size = size
        self.fit = fit
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample | None:
        item = self.items[index]
        try:
            pixels = fit_image(read_image(item.path), self.size, self.fit)
        except CXRImageError as error:
            log.warning("skipping unreadable image: %s", error)
            return None
        image = torch.from_numpy(pixels).unsqueeze(0)
        if self.transform is not None:
            image = self.transform(image)
        return {
            "image": image,
            "labels": torch.from_numpy(item.labels.astype(np.float32)),
            "mask": torch.from_numpy(item.label_mask.astype(bool)),
            "index": index,
        }


def collate_skipping_failed(samples: Sequence[Sample | None]) -> Sample:
    """``default_collate`` over the samples that decoded, plus ``skipped``: how many did not."""
    good = [sample for sample in samples if sample is not None]
    skipped = len(samples) - len(good)
    batch = default_collate(good) if good else {}
    batch["skipped"] = skipped
    return batch
