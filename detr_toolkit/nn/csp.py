"""The fusion blocks of the hybrid encoders: RT-DETR's CSP block of RepConvs (RepC3), D-FINE's ELAN block built
from two of them (RepNCSPELAN4), DEIMv2's lighter ELAN (RepNCSPELAN5) of single-split CSP blocks (RepCSP2), and
D-FINE's separable downsampling (SCDown)."""

from __future__ import annotations

import torch
from torch import nn

from .conv import ConvNormAct, RepConv


class RepC3(nn.Module):
    """CSP block of RepConvs: cv3(RepConvs(cv1(x)) + cv2(x)). Shapes: (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int, expansion: float, act: str, norm_eps: float):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.cv1 = ConvNormAct(in_channels, hidden, 1, act=act, norm_eps=norm_eps)
        self.cv2 = ConvNormAct(in_channels, hidden, 1, act=act, norm_eps=norm_eps)
        self.blocks = nn.Sequential(*(RepConv(hidden, act, norm_eps) for _ in range(blocks)))
        self.cv3 = (
            ConvNormAct(hidden, out_channels, 1, act=act, norm_eps=norm_eps)
            if hidden != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(self.blocks(self.cv1(x)) + self.cv2(x))


class ELAN(nn.Module):
    """D-FINE's RepNCSPELAN4: a 1x1 conv split in halves (a, b); two chained branches of a RepC3 and a 3x3 conv
    grow from b; a 1x1 conv merges a, b and both branches.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W); `width` is each branch's channel count.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int, blocks: int, act: str, norm_eps: float):
        super().__init__()
        conv = {"act": act, "norm_eps": norm_eps}
        self.split = ConvNormAct(in_channels, in_channels, 1, **conv)
        self.branch1 = nn.Sequential(
            RepC3(in_channels // 2, width, blocks, 1.0, act, norm_eps), ConvNormAct(width, width, 3, **conv)
        )
        self.branch2 = nn.Sequential(
            RepC3(width, width, blocks, 1.0, act, norm_eps), ConvNormAct(width, width, 3, **conv)
        )
        self.merge = ConvNormAct(in_channels + 2 * width, out_channels, 1, **conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.split(x).chunk(2, dim=1)
        first = self.branch1(b)
        return self.merge(torch.cat([a, b, first, self.branch2(first)], dim=1))


class RepCSP2(nn.Module):
    """DEIMv2's CSP block: one 1x1 conv split in halves (shortcut, path); RepConvs on the path; the sum, through a
    3x3 conv when `trailing_conv` (DEIMv2's HGNetv2 sizes) or as it is. Shapes: (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int, trailing_conv: bool, act: str,
                 norm_eps: float):  # fmt: skip
        super().__init__()
        self.split = ConvNormAct(in_channels, 2 * out_channels, 1, act=act, norm_eps=norm_eps)
        self.blocks = nn.Sequential(*(RepConv(out_channels, act, norm_eps) for _ in range(blocks)))
        self.merge = ConvNormAct(out_channels, out_channels, 3, act=act, norm_eps=norm_eps) if trailing_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut, path = self.split(x).chunk(2, dim=1)
        x = shortcut + self.blocks(path)
        return x if self.merge is None else self.merge(x)


class ELAN5(nn.Module):
    """DEIMv2's RepNCSPELAN5: a 1x1 conv to 2 * in_channels split in halves (a, b); two chained RepCSP2 grow from
    b; a 1x1 conv merges a, b and both. Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, width: int, blocks: int, trailing_conv: bool, act: str,
                 norm_eps: float):  # fmt: skip
        super().__init__()
        self.split = ConvNormAct(in_channels, 2 * in_channels, 1, act=act, norm_eps=norm_eps)
        self.branch1 = RepCSP2(in_channels, width, blocks, trailing_conv, act, norm_eps)
        self.branch2 = RepCSP2(width, width, blocks, trailing_conv, act, norm_eps)
        self.merge = ConvNormAct(2 * in_channels + 2 * width, out_channels, 1, act=act, norm_eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.split(x).chunk(2, dim=1)
        first = self.branch1(b)
        return self.merge(torch.cat([a, b, first, self.branch2(first)], dim=1))


class SCDown(nn.Module):
    """Separable stride-2 downsampling: 1x1 conv, then a depthwise 3x3 stride-2 conv, both without activation.

    Shapes: (B, C, H, W) -> (B, C, H / 2, W / 2).
    """

    def __init__(self, channels: int, norm_eps: float):
        super().__init__()
        self.pointwise = ConvNormAct(channels, channels, 1, act=None, norm_eps=norm_eps)
        self.depthwise = ConvNormAct(channels, channels, 3, 2, groups=channels, act=None, norm_eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.depthwise(self.pointwise(x))
