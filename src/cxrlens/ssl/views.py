"""Two augmented views per image, with the image's box mask carried through the first view.

:class:`TwoViewDataset` yields ``{"view1", "view2"}`` (uint8 1 x S x S) plus, for the CAM
loss of paper 000, ``box_mask`` (uint8 1 x S x S: the union of the image's boxes, moved
with view 1's geometry) and ``box_findings`` (multi-hot over the CAM findings). Labels are
never read: pretraining is self-supervised, and caches with different label sets can be
concatenated.

:class:`BoxedBatchSampler` guarantees ``k`` boxed images in every batch (paper 000 has
boxes for ~1 % of the images, so random batches would rarely carry any); the boxed pool
is cycled, reshuffled each pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from cxrlens.data.boxes import union_mask
from cxrlens.data.cache import PreparedCache


def box_union_mask(cache: PreparedCache, index: int, findings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The union of item ``index``'s boxes for ``findings`` in cache pixels, and their multi-hot."""
    boxes = [box for box in cache.boxes(index) if box.finding in findings]
    mask = union_mask(boxes, cache.size, cache.size)
    present = np.zeros(len(findings), dtype=np.float32)
    for box in boxes:
        present[list(findings).index(box.finding)] = 1.0
    return mask, present


class TwoViewDataset(Dataset):
    """Two random views of each selected cache item (and its box mask for the CAM loss)."""

    def __init__(self, cache: PreparedCache, indices: Sequence[int], view1: v2.Compose, view2: v2.Compose,
                 findings: Sequence[str] = ()) -> None:
        self.cache = cache
        self.indices = np.asarray(indices, dtype=np.int64)
        self.view1 = view1
        self.view2 = view2
        self.findings = list(findings)
        self.boxed = np.array([bool(self.findings) and any(b.finding in self.findings for b in cache.boxes(int(i)))
                               for i in self.indices], dtype=bool)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict:
        index = int(self.indices[position])
        pixels = torch.from_numpy(np.array(self.cache.images[index])).unsqueeze_(0)
        if self.boxed[position]:
            mask, present = box_union_mask(self.cache, index, self.findings)
        else:
            mask, present = np.zeros(pixels.shape[1:], dtype=np.uint8), np.zeros(len(self.findings), np.float32)
        view1, box_mask = self.view1(tv_tensors.Image(pixels), tv_tensors.Mask(torch.from_numpy(mask)[None]))
        view2 = self.view2(tv_tensors.Image(pixels))
        return {"view1": view1.as_subclass(torch.Tensor), "view2": view2.as_subclass(torch.Tensor),
                "box_mask": box_mask.as_subclass(torch.Tensor), "box_findings": torch.from_numpy(present),
                "index": index}


class BoxedBatchSampler:
    """Batches of ``batch_size`` with exactly ``boxed_per_batch`` boxed positions, split across ranks.

    ``boxed`` flags the dataset positions that carry boxes. An epoch has as many batches as
    the whole dataset fills; both pools are cycled in reshuffled passes. The order derives from
    ``(seed, epoch)`` only, so every rank draws the same global plan and takes its share.
    """

    def __init__(self, boxed: np.ndarray, batch_size: int, boxed_per_batch: int, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0) -> None:
        boxed = np.asarray(boxed, dtype=bool)
        if not 0 < boxed_per_batch <= batch_size:
            raise ValueError(f"boxed_per_batch must be in 1..batch_size ({batch_size}), not {boxed_per_batch}")
        if not boxed.any():
            raise ValueError("boxed_per_batch was asked for but no training image has a box")
        self.boxed_positions = np.flatnonzero(boxed)
        self.other_positions = np.flatnonzero(~boxed)
        self.batch_size = batch_size
        self.k = boxed_per_batch
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (len(self.boxed_positions) + len(self.other_positions)) // (self.batch_size * self.num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        generator = np.random.default_rng((self.seed, self.epoch))
        batches = len(self)
        other = self.batch_size - self.k
        # where every image has boxes, the rest of each batch is drawn from the boxed pool too
        other_pool = self.other_positions if len(self.other_positions) else self.boxed_positions
        boxed = _cycled(generator, self.boxed_positions, batches * self.num_replicas * self.k)
        others = _cycled(generator, other_pool, batches * self.num_replicas * other)
        for batch in range(batches):
            slot = batch * self.num_replicas + self.rank
            chosen = [*boxed[slot * self.k:(slot + 1) * self.k], *others[slot * other:(slot + 1) * other]]
            yield [int(position) for position in generator.permutation(chosen)]


def _cycled(generator: np.random.Generator, pool: np.ndarray, count: int) -> np.ndarray:
    """``count`` positions from ``pool``: whole reshuffled passes, as many as needed."""
    passes = max(1, -(-count // max(len(pool), 1)))
    return np.concatenate([generator.permutation(pool) for _ in range(passes)])[:count]
