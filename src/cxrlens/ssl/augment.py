"""Random view augmentations for grayscale radiographs, and a preview grid.

:func:`view_transform` builds one view's pipeline from a :class:`ViewAugmentConfig`
(papers 000, 001, 002: resized crop, affine, rotation, flip, gaussian blur, intensity
jitter - the colour jitter of SimCLR reduced to brightness and contrast, as CXRs have no
colour). It acts on uint8 ``tv_tensors.Image`` and, jointly, on a ``tv_tensors.Mask``:
geometric operations move the box mask with the image, intensity operations leave it
alone, so the CAM loss compares a view's heatmap with that view's boxes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from cxrlens.config import ViewAugmentConfig


def view_transform(config: ViewAugmentConfig, size: int) -> v2.Compose:
    """One view's augmentation at output side ``size`` (uint8 in, uint8 out)."""
    steps: list[v2.Transform] = []

    def maybe(transform: v2.Transform, p: float) -> None:
        if p > 0:
            steps.append(v2.RandomApply([transform], p=p))

    maybe(v2.RandomResizedCrop(size, scale=config.crop_scale, ratio=config.crop_ratio, antialias=True), config.crop_p)
    maybe(v2.RandomAffine(config.affine_degrees, translate=(config.affine_translate,) * 2, scale=config.affine_scale),
          config.affine_p)
    maybe(v2.RandomRotation(config.rotation), config.rotation_p)
    if config.hflip_p > 0:
        steps.append(v2.RandomHorizontalFlip(config.hflip_p))
    kernel = 2 * int(round(3 * config.blur_sigma[1])) + 1
    maybe(v2.GaussianBlur(kernel, sigma=config.blur_sigma), config.blur_p)
    maybe(v2.ColorJitter(brightness=config.brightness, contrast=config.contrast), config.jitter_p)
    return v2.Compose(steps)


def preview_grid(images: list[torch.Tensor], transforms: dict[str, v2.Compose], path: str | Path,
                 repeats: int = 4, seed: int = 0) -> Path:
    """Write a PNG grid: one row per image, its original then ``repeats`` draws of each transform."""
    torch.manual_seed(seed)
    rows = []
    for image in images:
        tiles = [image]
        for transform in transforms.values():
            tiles += [transform(image) for _ in range(repeats)]
        rows.append(torch.cat([tile[0] for tile in tiles], dim=1))
    grid = torch.cat(rows, dim=0).numpy().astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path
