"""The two views of :mod:`cxrlens.ssl.augment`, drawn for a whole batch on the training device (kornia).

With ``views_on: device`` the DataLoader workers only read uint8 images from the cache and
:class:`DeviceViews` draws both views on the device the model trains on: the same
operations, ranges and probabilities as :func:`cxrlens.ssl.augment.view_transform`
(resized crop, affine, rotation, flip, gaussian blur, brightness / contrast jitter), each
image with its own random parameters; the box mask moves with view 1's geometry and is
left alone by its intensity operations. Views come back as uint8, as the workers' do, so
everything after them (normalisation, the methods) is the same on both paths.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn

from cxrlens.config import ViewAugmentConfig


def device_view_transform(config: ViewAugmentConfig, size: int) -> K.AugmentationSequential:
    """One view's augmentation for float batches B x 1 x ``size`` x ``size`` in [0, 1] (with their masks)."""
    steps: list[nn.Module] = []
    if config.crop_p > 0:
        steps.append(K.RandomResizedCrop((size, size), scale=config.crop_scale, ratio=config.crop_ratio,
                                         p=config.crop_p))
    if config.affine_p > 0:
        steps.append(K.RandomAffine(config.affine_degrees, translate=(config.affine_translate,) * 2,
                                    scale=config.affine_scale, p=config.affine_p))
    if config.rotation_p > 0:
        steps.append(K.RandomRotation(config.rotation, p=config.rotation_p))
    if config.hflip_p > 0:
        steps.append(K.RandomHorizontalFlip(p=config.hflip_p))
    if config.blur_p > 0:
        kernel = 2 * int(round(3 * config.blur_sigma[1])) + 1
        steps.append(K.RandomGaussianBlur((kernel, kernel), config.blur_sigma, p=config.blur_p))
    if config.jitter_p > 0:
        steps.append(K.ColorJitter(brightness=config.brightness, contrast=config.contrast, p=config.jitter_p))
    return K.AugmentationSequential(*steps, data_keys=["input", "mask"])


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


class DeviceViews(nn.Module):
    """``views(view1, view2, box_mask) -> (view1, view2, view1's box mask)``: the workers' unaugmented uint8
    batches (B x 1 x S x S) in, the augmented ones out, on their device."""

    def __init__(self, online: ViewAugmentConfig, target: ViewAugmentConfig, size: int) -> None:
        super().__init__()
        self.online = device_view_transform(online, size)
        self.target = device_view_transform(target, size)

    @torch.no_grad()
    def forward(self, view1: torch.Tensor, view2: torch.Tensor, box_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        online, mask = self.online(view1.float().div_(255.0), box_mask.float())
        target, _ = self.target(view2.float().div_(255.0), box_mask.float())
        return _to_uint8(online), _to_uint8(target), mask.round_().to(torch.uint8)
