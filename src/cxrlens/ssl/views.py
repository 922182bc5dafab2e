"""Two augmented views per image, with the image's box mask carried through the first view.

:class:`TwoViewDataset` yields ``{"view1", "view2"}`` (uint8 1 x S x S) plus, for the CAM
loss of paper 000, ``box_mask`` (uint8 1 x S x S: the union of the image's boxes, moved
with view 1's geometry) and ``box_findings`` (multi-hot over the CAM findings). Labels are
never read: pretraining is self-supervised, and caches with different label sets can be
concatenated.

:class:`cxrlens.train.boxed_batches.BoxedBatchSampler` puts ``k`` boxed images in every batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from cxrlens.data.cache import PreparedCache
from cxrlens.data.torch_datasets import box_union_mask, cached_boxed_positions


class TwoViewDataset(Dataset):
    """Two random views of each selected cache item (and its box mask for the CAM loss)."""

    def __init__(self, cache: PreparedCache, indices: Sequence[int], view1: v2.Transform, view2: v2.Transform,
                 findings: Sequence[str] = ()) -> None:
        self.cache = cache
        self.indices = np.asarray(indices, dtype=np.int64)
        self.view1 = view1
        self.view2 = view2
        self.findings = list(findings)
        self.boxed = cached_boxed_positions(cache, self.indices, self.findings)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict:
        index = int(self.indices[position])
        pixels = torch.from_numpy(np.array(self.cache.images[index])).unsqueeze_(0)
        mask, present = box_union_mask(self.cache, index, self.findings)
        view1, box_mask = self.view1(tv_tensors.Image(pixels), tv_tensors.Mask(torch.from_numpy(mask)[None]))
        view2 = self.view2(tv_tensors.Image(pixels))
        return {"view1": view1.as_subclass(torch.Tensor), "view2": view2.as_subclass(torch.Tensor),
                "box_mask": box_mask.as_subclass(torch.Tensor), "box_findings": torch.from_numpy(present),
                "index": index}
