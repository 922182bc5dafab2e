"""Multi-resolution feature extractors of papers 003 and 004.

* :class:`MergeBlockMultiRes` (paper 003, eq. 1 and Fig. 2b): coarse-to-fine
  ``F_o^l = g(F_o^{l+1}, F^l)``; the merge block ``g`` reduces the channels of both
  inputs by 4 with 1x1 conv + ReLU, upsamples the coarse one bilinearly to the fine one's
  size, concatenates, and maps back to ``F^l``'s channels with 1x1 conv + ReLU. Merging
  runs from stride 32 down to stride 4, so the output map has 4x the side of the plain
  backbone's.
* :class:`DenseMultiResDecoder` (paper 004, eq. 2-3): per resolution level a DenseNet
  block ``F_{m+1} = f(F_1 (+) ... (+) F_m)``; each level starts from the nearest-neighbour
  upsampled output of the coarser level concatenated with the encoder map,
  ``F_m^l = f(U(F_n^{l+1}) (+) F_{m-1}^l)``; the finest level's stride sets the saliency
  map's side N (64 x 64 at 512 input with stride 8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv1x1_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv + ReLU with He initialisation (He et al., 2015), which keeps the activations' scale through the
    chain of merges; PyTorch's default init shrinks it about 5x over three merge blocks and the new layers then
    pass the backbone almost no gradient (a MultiRes model trained from it did not learn)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, nn.ReLU(inplace=True))


class MergeBlock(nn.Module):
    """Merge block ``g`` of paper 003 Fig. 2b."""

    def __init__(self, coarse_channels: int, fine_channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.reduce_coarse = _conv1x1_relu(coarse_channels, coarse_channels // reduction)
        self.reduce_fine = _conv1x1_relu(fine_channels, fine_channels // reduction)
        self.fuse = _conv1x1_relu(coarse_channels // reduction + fine_channels // reduction, fine_channels)

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        """``relu(fuse(cat(up(reduce_coarse(coarse)), reduce_fine(fine))))``, computed as ``relu(up(W_c
        reduce_coarse(coarse)) + W_f reduce_fine(fine) + b)`` with ``fuse``'s own weight split by input (``[W_c,
        W_f]``): the 1x1 convolution and bilinear upsampling are both linear, and upsampling's weights sum to one, so
        they commute, and the coarse half of ``fuse`` runs at the coarse resolution (a quarter of the positions) with
        no concatenated map. Same parameters, same outputs up to float rounding (tested against the literal form)."""
        weight = self.fuse[0].weight
        split = self.reduce_coarse[0].out_channels
        coarse_part = F.conv2d(self.reduce_coarse(coarse), weight[:, :split])
        fine_part = F.conv2d(self.reduce_fine(fine), weight[:, split:], self.fuse[0].bias)
        upsampled = F.interpolate(coarse_part, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return fine_part.add_(upsampled).relu_()


class MergeBlockMultiRes(nn.Module):
    """Paper 003 eq. (1) over a backbone's four maps; returns ``[F_o^1, ..., F_o^4]`` (coarse last).

    Parameter counts with a 14-class head on the stride-4 map (``cxrlens models list``):
    MultiRes-ResNet50 26,261,006 with our 1-channel stem, 26,267,278 with the paper's
    3-channel input, against paper 003 Table 4's 26,273,615: 6,337 (0.02 %) apart, from
    details the paper does not give (e.g. biases). MultiRes-EfficientNet-B4 has 18,448,274
    (paper: 18,913,543, 2.5 % more): the paper does not say which EfficientNet stages it
    taps; we tap the four stage outputs at strides 4-32 and the 1,792-channel head.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        channels = backbone.channels
        self.merges = nn.ModuleList(MergeBlock(channels[level + 1], channels[level]) for level in range(len(channels) - 1))
        self.channels = list(channels)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = self.backbone(images)
        merged = [features[-1]]
        for level in range(len(features) - 2, -1, -1):
            merged.insert(0, self.merges[level](merged[0], features[level]))
        return merged


class DenseLayer(nn.Module):
    """BN-ReLU-Conv3x3 producing ``growth`` new channels (DenseNet composite function f)."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                                   nn.Conv2d(in_channels, growth, kernel_size=3, padding=1, bias=False))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.block(inputs)


class DenseBlock(nn.Module):
    """Paper 004 eq. (2): each layer sees the concatenation of all earlier maps."""

    def __init__(self, in_channels: int, num_layers: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(in_channels + i * growth, growth) for i in range(num_layers))
        self.out_channels = in_channels + num_layers * growth

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        maps = [inputs]
        for layer in self.layers:
            maps.append(layer(torch.cat(maps, dim=1)))
        return torch.cat(maps, dim=1)


class DenseMultiResDecoder(nn.Module):
    """Paper 004 eq. (3) from stride 32 down to ``finest_stride``; returns the finest map.

    ``width`` channels enter each level (1x1 reductions of the encoder maps and of each
    block's output); ``dense_layers`` and ``growth`` size the DenseNet blocks. The paper
    does not list these sizes; 4 layers of growth 32 at width 128 are our defaults.
    """

    def __init__(self, backbone: nn.Module, finest_stride: int = 8, width: int = 128, dense_layers: int = 4,
                 growth: int = 32) -> None:
        super().__init__()
        if finest_stride not in backbone.strides:
            raise ValueError(f"saliency stride {finest_stride} must be one of the backbone strides {backbone.strides}")
        self.backbone = backbone
        self.first_level = backbone.strides.index(finest_stride)
        levels = range(self.first_level, len(backbone.channels))
        self.lateral = nn.ModuleDict({str(l): _conv1x1_relu(backbone.channels[l], width) for l in levels})
        self.blocks = nn.ModuleDict()
        self.transitions = nn.ModuleDict()
        for level in levels:
            in_channels = width if level == len(backbone.channels) - 1 else 2 * width
            block = DenseBlock(in_channels, dense_layers, growth)
            self.blocks[str(level)] = block
            self.transitions[str(level)] = _conv1x1_relu(block.out_channels, width)
        self.out_channels = width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        output: torch.Tensor | None = None
        for level in range(len(features) - 1, self.first_level - 1, -1):
            lateral = self.lateral[str(level)](features[level])
            if output is not None:
                lateral = torch.cat([F.interpolate(output, size=lateral.shape[-2:], mode="nearest"), lateral], dim=1)
            output = self.transitions[str(level)](self.blocks[str(level)](lateral))
        assert output is not None
        return output
