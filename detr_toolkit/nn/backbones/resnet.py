"""ResNet-vd (He et al., "Bag of Tricks for Image Classification", variant D), the backbone of the official
RT-DETR and RT-DETRv2 R18-R101 models.

    stem: three 3x3 convs (stride 2, 1, 1; channels stem/2, stem/2, stem), 3x3 max-pool stride 2  -> stride 4
    stages: residual blocks, "basic" (two 3x3 convs; R18/R34) or "bottleneck" (1x1, 3x3, 1x1 at 4x width;
            R50/R101); stages after the first halve the resolution in their first block's 3x3 conv
    shortcut of each stage's first block: a 1x1 conv, after a 2x2 average pool where the block downsamples
            (variant D: the pool keeps the information a strided 1x1 conv would skip); identity elsewhere

Training options of the official recipe: `freeze_norm` makes every batch norm a fixed affine map
(torchvision's FrozenBatchNorm2d); `frozen_parts` stops gradients to that many leading parts: 1 the stem
(the official `freeze_at: 0`), 2 the stem and the first stage, ...
"""

from __future__ import annotations

import torch
from torch import nn

from ..common import activation
from ..conv import ConvNormAct
from ..validation import Count, CountOrZero, Index
from .staged import StagedBackbone

STEM_STRIDE = 4
BOTTLENECK_EXPANSION = 4


class Shortcut(nn.Module):
    """The projection of a stage's first block: [2x2 average pool when `stride` is 2] -> 1x1 conv -> norm.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str, norm_eps: float):
        super().__init__()
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True) if stride == 2 else nn.Identity()
        self.proj = ConvNormAct(in_channels, out_channels, 1, act=None, norm=norm, norm_eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(x))


class ResidualBlock(nn.Module):
    """act(convs(x) + shortcut(x)). `kind` "basic": 3x3 (stride), 3x3; "bottleneck": 1x1, 3x3 (stride), 1x1 to
    `out_channels` (= 4x the inner width). Shapes: (B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride).
    """

    def __init__(self, kind: str, in_channels: int, out_channels: int, stride: int, project: bool, act: str,
                 norm: str, norm_eps: float):  # fmt: skip
        super().__init__()
        conv = {"norm": norm, "norm_eps": norm_eps}
        if kind == "basic":
            self.convs = nn.Sequential(
                ConvNormAct(in_channels, out_channels, 3, stride, act=act, **conv),
                ConvNormAct(out_channels, out_channels, 3, act=None, **conv),
            )
        else:
            inner = out_channels // BOTTLENECK_EXPANSION
            self.convs = nn.Sequential(
                ConvNormAct(in_channels, inner, 1, act=act, **conv),
                ConvNormAct(inner, inner, 3, stride, act=act, **conv),
                ConvNormAct(inner, out_channels, 1, act=None, **conv),
            )
        self.shortcut = Shortcut(in_channels, out_channels, stride, norm, norm_eps) if project else nn.Identity()
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + self.shortcut(x))


class ResNetVD(StagedBackbone):
    """Stem + four stages; returns the maps of `return_stages` (strides 8, 16, 32 for stages 1, 2, 3).

    Shapes: (B, 3, H, W) -> [(B, out_channels[i], H / s_i, W / s_i) for each returned stage].

    Args:
        depths: blocks per stage (R18: 2, 2, 2, 2; R34 and R50: 3, 4, 6, 3; R101: 3, 4, 23, 3).
        widths: output channels per stage (basic: 64, 128, 256, 512; bottleneck: 256, 512, 1024, 2048).
        block: "basic" or "bottleneck".
        stem: output channels of the stem.
    """

    def __init__(
        self,
        depths: list[Count],
        widths: list[int],
        block: str = "bottleneck",
        stem: int = 64,
        return_stages: list[Index] = (1, 2, 3),
        act: str = "relu",
        norm_eps: float = 1e-5,
        freeze_norm: bool = False,
        frozen_parts: CountOrZero = 0,
        in_channels: int = 3,
    ):
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block={block!r}: use 'basic' or 'bottleneck'")
        if len(depths) != len(widths):
            raise ValueError(f"depths {list(depths)} and widths {list(widths)} must name the same stages")
        conv = {"act": act, "norm": "frozen_batch" if freeze_norm else "batch", "norm_eps": norm_eps}
        self.stem = nn.Sequential(
            ConvNormAct(in_channels, stem // 2, 3, 2, **conv),
            ConvNormAct(stem // 2, stem // 2, 3, **conv),
            ConvNormAct(stem // 2, stem, 3, **conv),
            nn.MaxPool2d(3, 2, 1),
        )
        self.stages = nn.ModuleList()
        channels, strides = [stem], [STEM_STRIDE]
        for index, (depth, width) in enumerate(zip(depths, widths)):
            stride = 1 if index == 0 else 2
            first = ResidualBlock(block, channels[-1], width, stride, project=True, **conv)
            rest = [ResidualBlock(block, width, width, 1, project=False, **conv) for _ in range(depth - 1)]
            self.stages.append(nn.Sequential(first, *rest))
            channels.append(width)
            strides.append(strides[-1] * stride)
        self.finish(channels, strides, return_stages, frozen_parts)
