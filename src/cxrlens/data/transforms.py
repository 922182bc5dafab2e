"""Augmentations for 1-channel uint8 radiographs (torchvision.transforms.v2, dtype kept).

:func:`supervised_augmentation` is paper 003's: random resized crop of 80-100 % of the
area with aspect ratio 0.75-1.733, horizontal flip, rotation within +-15 degrees.
"""

from __future__ import annotations

from torchvision.transforms import v2


def supervised_augmentation(size: int, scale: tuple[float, float] = (0.8, 1.0),
                            ratio: tuple[float, float] = (0.75, 1.733), rotation: float = 15.0,
                            hflip: float = 0.5) -> v2.Compose:
    """Paper 003's training augmentation at output side ``size``."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=scale, ratio=ratio, antialias=True),
        v2.RandomHorizontalFlip(hflip),
        v2.RandomRotation(rotation),
    ])
