"""Training augmentations for 1-channel uint8 radiographs (torchvision.transforms.v2, dtype kept).

:func:`supervised_augmentation` builds one of the papers' recipes by name:

* ``crop-flip-rotate`` (paper 003): random resized crop of 80-100 % of the area with
  aspect ratio 0.75-1.733, horizontal flip, rotation within +-15 degrees;
* ``affine`` (paper 000 fine-tuning): a random affine "with values similar to those of the
  target network" (the BYOL target view's: rotation +-15 degrees, shift 15 %, scale
  0.85-1.15), applied with p = 0.5;
* ``zoom-shift-rotate`` (paper 004): zoom by a factor drawn from [0.25, 0.75], shift by
  up to 50 px of a 512 px image in each direction, rotation within +-25 degrees. The paper
  gives only the zoom range; we read it as the scale of the image content (values below 1
  shrink it), the literal meaning of torchvision's ``scale``;
* ``none``.
"""

from __future__ import annotations

from torchvision.transforms import v2

RECIPES: tuple[str, ...] = ("crop-flip-rotate", "affine", "zoom-shift-rotate", "none")


def supervised_augmentation(recipe: str, size: int) -> v2.Compose | None:
    """The augmentation ``recipe`` at output side ``size`` (None for ``none``)."""
    if recipe == "crop-flip-rotate":
        return v2.Compose([v2.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.75, 1.733), antialias=True),
                           v2.RandomHorizontalFlip(0.5), v2.RandomRotation(15.0)])
    if recipe == "affine":
        return v2.Compose([v2.RandomApply([v2.RandomAffine(15.0, translate=(0.15, 0.15), scale=(0.85, 1.15))], p=0.5)])
    if recipe == "zoom-shift-rotate":
        return v2.Compose([v2.RandomAffine(25.0, translate=(50 / 512, 50 / 512), scale=(0.25, 0.75))])
    if recipe == "none":
        return None
    raise ValueError(f"augmentation must be one of {', '.join(RECIPES)}, not {recipe!r}")
