"""Score-CAM (Wang et al. 2020): each channel, upsampled and min-max scaled, masks the input;
the masked images' logits, softmaxed over channels, weight the channels.

The masked forward passes are batched over channels and shared by all classes
(pytorch-grad-cam reruns them for every class).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrlens.explain.base import METHODS, CAMInputs, CAMMethod, scale_maps


@METHODS.register("scorecam")
class ScoreCAM(CAMMethod):
    """``batch_size``: masked images per forward pass."""

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size

    @torch.no_grad()
    def maps(self, inputs: CAMInputs) -> torch.Tensor:
        images, features = inputs.images, inputs.features.detach()
        masks = scale_maps(F.interpolate(features, size=images.shape[-2:], mode="bilinear", align_corners=True),
                           eps=1e-8)                                                     # B x C x H x W
        maps = []
        for image, image_masks, image_features in zip(images, masks, features):
            scores = []
            for start in range(0, image_masks.shape[0], self.batch_size):
                masked = image[None] * image_masks[start:start + self.batch_size, None]     # n x 1 x H x W
                scores.append(inputs.forward(masked)[:, inputs.classes])
            weights = torch.softmax(torch.cat(scores).float(), dim=0)                   # C x P
            maps.append(F.relu(torch.einsum("cp,chw->phw", weights, image_features)))
        return torch.stack(maps)
