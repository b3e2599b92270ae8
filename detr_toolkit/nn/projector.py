"""The projector of RF-DETR / LW-DETR: turns single-scale ViT features into the multi-scale maps a decoder reads.

For each output scale s (2.0, 1.0, 0.5, 0.25): every tapped ViT map is resampled to s times its size
(transposed conv up, strided conv down), the maps are concatenated and fused by a C2f block (YOLOv8's
cross-stage block of 3x3 conv pairs), then layer-normalised.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import LayerNorm2d
from .conv import ConvNormAct
from .validation import Count

SCALES = (2.0, 1.0, 0.5, 0.25)


class C2f(nn.Module):
    """1x1 conv into two halves; a chain of conv pairs on the second half, every intermediate kept; 1x1 conv out.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(
        self, in_channels: int, out_channels: int, blocks: int, expansion: float, act: str, norm: str, norm_eps: float
    ):
        super().__init__()
        self.hidden = int(out_channels * expansion)
        conv = {"act": act, "norm": norm, "norm_eps": norm_eps}
        self.conv1 = ConvNormAct(in_channels, 2 * self.hidden, 1, **conv)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                ConvNormAct(self.hidden, self.hidden, 3, **conv), ConvNormAct(self.hidden, self.hidden, 3, **conv)
            )
            for _ in range(blocks)
        )
        self.conv2 = ConvNormAct((2 + blocks) * self.hidden, out_channels, 1, **conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.conv1(x).split(self.hidden, dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.conv2(torch.cat(parts, dim=1))


def resampler(channels: int, scale: float, norm: str, norm_eps: float) -> tuple[nn.Sequential, int]:
    """A module resizing a (B, channels, H, W) map by `scale`, and its output channel count."""
    conv = {"act": "relu", "norm": norm, "norm_eps": norm_eps}
    if scale == 2.0:
        if channels > 512:  # wide maps are narrowed first (LW-DETR's large ViTs)
            layers = [
                ConvNormAct(channels, channels // 2, 1, **conv),
                nn.ConvTranspose2d(channels // 2, channels // 4, 2, 2),
            ]
            return nn.Sequential(*layers), channels // 4
        return nn.Sequential(nn.ConvTranspose2d(channels, channels // 2, 2, 2)), channels // 2
    if scale == 1.0:
        return nn.Sequential(), channels
    steps = {0.5: 1, 0.25: 2}[scale]
    return nn.Sequential(*(ConvNormAct(channels, channels, 3, 2, **conv) for _ in range(steps))), channels


class ProjectorLevel(nn.Module):
    """One output scale. Shapes: [(B, C_i, H, W)] -> (B, out_channels, H * scale, W * scale)."""

    def __init__(self, in_channels: list[int], out_channels: int, scale: float, blocks, expansion, act, norm, norm_eps,
                 out_norm_eps):  # fmt: skip
        super().__init__()
        resamplers = [resampler(c, scale, norm, norm_eps) for c in in_channels]
        self.resample = nn.ModuleList(module for module, _ in resamplers)
        fused_in = sum(channels for _, channels in resamplers)
        self.c2f = C2f(fused_in, out_channels, blocks, expansion, act, norm, norm_eps)
        self.norm = LayerNorm2d(out_channels, eps=out_norm_eps)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        resampled = [resample(f) for resample, f in zip(self.resample, features)]
        return self.norm(self.c2f(torch.cat(resampled, dim=1)))


class MultiScaleProjector(nn.Module):
    """Shapes: [(B, in_channels[i], H, W)] -> [(B, out_channels, H * s, W * s) for s in scale_factors].

    Args:
        scale_factors: output scales relative to the ViT's grid, each one of 2.0, 1.0, 0.5, 0.25.
        out_channels: channels of every output map (the decoder's width).
        blocks, expansion: C2f depth and hidden width (as a fraction of out_channels).
        act: activation of the C2f convolutions.
        norm, norm_eps: "batch" (LW-DETR) or "layer" (RF-DETR) normalisation in the convolutions, and its epsilon.
        out_norm_eps: epsilon of each level's closing LayerNorm, its own setting: RF-DETR and LW-DETR (roboflow's and
            transformers' code) keep it at 1e-6 whatever the convolutions use.
    """

    def __init__(
        self,
        in_channels: list[int],
        scale_factors: tuple[float, ...] = (1.0,),
        out_channels: int = 256,
        blocks: Count = 3,
        expansion: float = 0.5,
        act: str = "silu",
        norm: str = "layer",
        norm_eps: float = 1e-5,
        out_norm_eps: float = 1e-6,
    ):
        super().__init__()
        unknown = [s for s in scale_factors if s not in SCALES]
        if unknown:
            raise ValueError(f"projector scale_factors {unknown} not supported (use {list(SCALES)})")
        self.levels = nn.ModuleList(
            ProjectorLevel(in_channels, out_channels, s, blocks, expansion, act, norm, norm_eps, out_norm_eps)
            for s in scale_factors
        )
        self.scale_factors = list(scale_factors)
        self.out_channels = [out_channels] * len(scale_factors)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [level(features) for level in self.levels]
