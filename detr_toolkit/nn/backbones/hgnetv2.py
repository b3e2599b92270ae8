"""HGNetv2, the CNN backbone of RT-DETR-L/X (PaddlePaddle's PP-HGNetV2, as used by ultralytics).

A stem (stride 4), then stages of HG blocks; each stage after the first starts with a depthwise stride-2 conv.
An HG block runs `layers` convs in sequence and concatenates all their outputs (plus its input), then
squeezes and excites the concatenation back to `out` channels with two 1x1 convs.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from ..conv import ConvNormAct
from ..validation import Count, CountOrZero, Index
from .staged import StagedBackbone

STEM_STRIDE = 4


class HGStem(nn.Module):
    """Stride-4 stem with a max-pool branch and a conv branch.

    Shapes: (B, 3, H, W) -> (B, out_channels, H / 4, W / 4).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, norm: dict):
        super().__init__()
        conv = {"act": "relu", **norm}
        self.stem1 = ConvNormAct(in_channels, mid_channels, 3, 2, **conv)
        self.stem2a = ConvNormAct(mid_channels, mid_channels // 2, 2, 1, padding=0, **conv)
        self.stem2b = ConvNormAct(mid_channels // 2, mid_channels, 2, 1, padding=0, **conv)
        self.stem3 = ConvNormAct(mid_channels * 2, mid_channels, 3, 2, **conv)
        self.stem4 = ConvNormAct(mid_channels, out_channels, 1, 1, **conv)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(self.stem1(x), [0, 1, 0, 1])
        conv_branch = self.stem2b(F.pad(self.stem2a(x), [0, 1, 0, 1]))
        x = torch.cat([self.pool(x), conv_branch], dim=1)
        return self.stem4(self.stem3(x))


class LightConv(nn.Module):
    """1x1 conv (no activation) followed by a depthwise k x k conv with ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: dict):
        super().__init__()
        self.pointwise = ConvNormAct(in_channels, out_channels, 1, act=None, **norm)
        self.depthwise = ConvNormAct(out_channels, out_channels, kernel_size, groups=out_channels, **norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.depthwise(self.pointwise(x))


class HGBlock(nn.Module):
    """`layers` chained convs, all outputs concatenated, squeezed to out/2 and excited to `out` channels.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W); residual when `shortcut`.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        kernel_size: int,
        layers: int,
        light: bool,
        shortcut: bool,
        norm: dict,
    ):
        super().__init__()

        def conv(cin: int) -> nn.Module:
            if light:
                return LightConv(cin, mid_channels, kernel_size, norm)
            return ConvNormAct(cin, mid_channels, kernel_size, **norm)

        self.layers = nn.ModuleList(conv(in_channels if i == 0 else mid_channels) for i in range(layers))
        total = in_channels + layers * mid_channels
        self.squeeze = ConvNormAct(total, out_channels // 2, 1, **norm)
        self.excite = ConvNormAct(out_channels // 2, out_channels, 1, **norm)
        self.shortcut = shortcut and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        for layer in self.layers:
            outputs.append(layer(outputs[-1]))
        y = self.excite(self.squeeze(torch.cat(outputs, dim=1)))
        return y + x if self.shortcut else y


class HGStage(nn.Module):
    """Optional depthwise stride-2 downsample, then `blocks` HG blocks (all but the first residual)."""

    def __init__(
        self,
        in_channels: int,
        mid: int,
        out: int,
        blocks: Count = 1,
        kernel: int = 3,
        light: bool = False,
        downsample: bool = True,
        layers: Count = 6,
        norm: dict | None = None,
    ):
        super().__init__()
        norm = norm or {}
        self.downsample = (
            ConvNormAct(in_channels, in_channels, 3, 2, groups=in_channels, act=None, **norm)
            if downsample
            else nn.Identity()
        )
        self.blocks = nn.Sequential(
            *(
                HGBlock(in_channels if i == 0 else out, mid, out, kernel, layers, light, i > 0, norm)
                for i in range(blocks)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class HGNetv2(StagedBackbone):
    """Stem + stages; returns the feature maps of `return_stages` (strides 8, 16, 32 for stages 1, 2, 3).

    Shapes: (B, 3, H, W) -> [(B, out_channels[i], H / s_i, W / s_i) for each returned stage].
    D-FINE's and DEIMv2's options: `affine` (a learned scale and bias after every activation, PP-HGNetV2's LAB),
    `freeze_norm` (batch norms with fixed statistics) and `frozen_parts` (no gradients to that many leading parts:
    1 the stem, 2 the stem and the first stage, ...), as their larger sizes train it.
    """

    def __init__(
        self,
        stem: list[int],
        stages: list[Annotated[dict, HGStage]],
        return_stages: list[Index],
        layers_per_block: Count = 6,
        norm_eps: float = 1e-5,
        affine: bool = False,
        freeze_norm: bool = False,
        frozen_parts: CountOrZero = 0,
        in_channels: int = 3,
    ):
        super().__init__()
        norm = {"norm_eps": norm_eps, "norm": "frozen_batch" if freeze_norm else "batch", "affine": affine}
        self.stem = HGStem(in_channels, stem[0], stem[1], norm)
        channels, strides = [stem[1]], [STEM_STRIDE]
        self.stages = nn.ModuleList()
        for stage in stages:
            self.stages.append(HGStage(channels[-1], layers=layers_per_block, norm=norm, **stage))
            channels.append(stage["out"])
            strides.append(strides[-1] * (2 if stage.get("downsample") else 1))
        self.finish(channels, strides, return_stages, frozen_parts)
