"""Convolution blocks: conv + batch norm + activation, and the re-parameterisable RepConv.

Both fold into a single convolution for inference (`fuse()`), which is what makes CNN parts fast on CPU;
`fuse_model` folds every part of a model that can.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.ops import FrozenBatchNorm2d

from .common import LayerNorm2d, LearnableAffine, activation

# "frozen_batch": a batch norm whose statistics and affine are fixed buffers (the official RT-DETR R50/R101 recipe)
NORMS = {"batch": nn.BatchNorm2d, "frozen_batch": FrozenBatchNorm2d, "layer": LayerNorm2d}


class ConvNormAct(nn.Module):
    """Conv2d (no bias) -> norm (a key of NORMS: BatchNorm2d by default) -> activation [-> learnable affine].

    `padding` defaults to 'same' for odd kernels. `affine`: a learned scale and bias after the activation
    (HGNetv2's LAB in D-FINE / DEIMv2; only where there is an activation).

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        act: str | None = "relu",
        norm_eps: float = 1e-5,
        norm: str = "batch",
        affine: bool = False,
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; known: {sorted(NORMS)}")
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.norm = NORMS[norm](out_channels, eps=norm_eps)
        self.act = activation(act)
        self.lab = LearnableAffine() if affine and act is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm(self.conv(x)))
        return x if self.lab is None else self.lab(x)

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the batch norm into the convolution (inference only; the norm becomes an identity)."""
        if isinstance(self.norm, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            self.conv = fuse_conv_bn_eval(self.conv.eval(), self.norm.eval())
            self.norm = nn.Identity()


class RepConv(nn.Module):
    """RepVGG block: act(conv3x3-bn(x) + conv1x1-bn(x)), folded into one 3x3 conv by `fuse()`.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, act: str | None = "silu", norm_eps: float = 1e-5):
        super().__init__()
        self.conv3x3 = ConvNormAct(channels, channels, 3, act=None, norm_eps=norm_eps)
        self.conv1x1 = ConvNormAct(channels, channels, 1, act=None, norm_eps=norm_eps)
        self.act = activation(act)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.act(self.fused(x))
        return self.act(self.conv3x3(x) + self.conv1x1(x))

    @torch.no_grad()
    def fuse(self) -> None:
        """Replace both branches by one 3x3 conv whose kernel is their sum (the 1x1 padded to 3x3)."""
        if self.fused is not None:
            return
        self.conv3x3.fuse()
        self.conv1x1.fuse()
        conv3, conv1 = self.conv3x3.conv, self.conv1x1.conv
        weight = conv3.weight
        fused = nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1, device=weight.device, dtype=weight.dtype)
        fused.weight.copy_(weight + nn.functional.pad(conv1.weight, [1, 1, 1, 1]))
        fused.bias.copy_(conv3.bias + conv1.bias)
        self.fused = fused
        del self.conv3x3, self.conv1x1


def fuse_model(model: nn.Module) -> nn.Module:
    """Fold every part of `model` that can fold for inference (ConvNormAct, RepConv, ViTBlock: any module with a
    `fuse()` method); returns the model."""
    for module in list(model.modules()):
        if callable(getattr(module, "fuse", None)):
            module.fuse()
    return model
