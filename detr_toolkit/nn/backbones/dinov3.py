"""DINOv3's ViT (Siméoni et al., 2025) with DEIMv2's spatial tuning adapter, the backbone of DEIMv2-S/M/L/X.

images --16x16 patches--> [class, registers, patches] tokens (no absolute positions)
blocks: pre-norm self-attention with a 2-D rotary position embedding on the patch tokens, layer scale, MLP
taps after `return_blocks` -> patch grids resized to strides 8, 16, 32 (bilinear)
each concatenated with the adapter's map of the same stride -> (B, dim + adapter channels, H/s, W/s)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import MultiHeadAttention
from ..common import SwiGLU
from ..validation import Count, CountOrZero, Index
from .spatial_adapter import SpatialTuningAdapter
from .vit import LayerScale, ViTMLP

TAP_NORMS = ("all", "last", "none")
OUT_STRIDES = [8, 16, 32]


def rope_tables(
    grid_h: int, grid_w: int, head_dim: int, theta: float, device=None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """DINOv3's 2-D rotary tables for a (grid_h, grid_w) patch grid, row-major. -> cos, sin (grid_h * grid_w, head_dim).

    Patch centres are placed in [-1, 1] along each axis; head_dim / 4 frequencies 1 / theta^(4i / head_dim) turn
    each coordinate into angles 2 pi c f: [y angles, x angles], repeated twice. Centres and frequencies are float32,
    as DINOv3 computes them; the angles are computed in `dtype` (float64 for a float64 model).
    """
    frequencies = (1 / theta ** torch.arange(0, 1, 4 / head_dim, dtype=torch.float32, device=device)).to(dtype)
    axes = [torch.arange(0.5, n, dtype=torch.float32, device=device) / n for n in (grid_h, grid_w)]
    centres = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).flatten(0, 1) * 2 - 1  # (N, 2) y, x
    angles = (2 * math.pi * centres.to(dtype)[:, :, None] * frequencies).flatten(1).tile(2)
    return angles.cos(), angles.sin()


class DINOv3Block(nn.Module):
    """Pre-norm block: x + ls1(attn(norm1 x)), then x + ls2(mlp(norm2 x)). Shapes: (B, T, dim) -> (B, T, dim)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, gated_mlp: bool, layer_scale: float | None,
                 key_bias: bool, norm_eps: float):  # fmt: skip
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(dim, num_heads, key_bias=key_bias)
        self.ls1 = nn.Identity() if layer_scale is None else LayerScale(dim, layer_scale)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = SwiGLU(dim, ffn_dim) if gated_mlp else ViTMLP(dim, ffn_dim)
        self.ls2 = nn.Identity() if layer_scale is None else LayerScale(dim, layer_scale)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.ls1(self.attn(y, y, y, rotary=rotary))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DINOv3(nn.Module):
    """Shapes: (B, 3, H, W), sides multiples of 32 -> [(B, out_channels[i], H / s, W / s) for s in 8, 16, 32].

    Args:
        patch_size, dim, depth, num_heads, ffn_dim: the ViT's shape. gated_mlp: a SwiGLU MLP (ViT-S+).
        num_registers: register tokens after the class token. layer_scale: the layer scales' initial value (None:
            no layer scale, as DEIMv2's ViT-Tiny).
        key_bias: a bias in the key projection. rope_theta: the rotary embedding's base period.
        return_blocks: the three blocks (0-based) whose outputs become the stride 8, 16 and 32 maps.
        tap_norm: which taps the final norm is applied to: `all`, `last` (only a tap of the last block; how
            transformers runs DINOv3 taps without norm), or `none` (then the ViT has no final norm).
        adapter_width: the spatial tuning adapter's base width c (its maps have 2c, 4c, 4c channels).
    """

    def __init__(
        self,
        patch_size: int = 16,
        dim: int = 192,
        depth: Count = 12,
        num_heads: Count = 3,
        ffn_dim: int = 768,
        gated_mlp: bool = False,
        num_registers: CountOrZero = 0,
        layer_scale: float | None = 1.0,
        key_bias: bool = True,
        rope_theta: float = 100.0,
        norm_eps: float = 1e-5,
        return_blocks: list[Index] = (3, 7, 11),
        tap_norm: str = "last",
        adapter_width: int = 16,
        adapter_norm_eps: float = 1e-5,
    ):
        super().__init__()
        if (
            len(set(return_blocks)) != 3
            or sorted(return_blocks) != list(return_blocks)
            or not all(0 <= b < depth for b in return_blocks)
            or return_blocks[-1] != depth - 1  # blocks after the last tap would never run: unused weights
        ):
            raise ValueError(
                f"return_blocks={list(return_blocks)}: three different blocks of 0..{depth - 1} in order, the last "
                f"one {depth - 1}"
            )
        if tap_norm not in TAP_NORMS:
            raise ValueError(f"tap_norm={tap_norm!r}: use one of {TAP_NORMS}")
        self.patch_size, self.num_heads, self.rope_theta = patch_size, num_heads, rope_theta
        self.return_blocks, self.tap_norm = list(return_blocks), tap_norm
        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_registers, dim))
        self.blocks = nn.ModuleList(
            DINOv3Block(dim, num_heads, ffn_dim, gated_mlp, layer_scale, key_bias, norm_eps) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if tap_norm != "none" else None
        self.adapter = SpatialTuningAdapter(adapter_width, adapter_norm_eps)
        self.out_channels = [dim + c for c in self.adapter.out_channels]
        self.out_strides = list(OUT_STRIDES)
        self.stride = max(OUT_STRIDES)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The ViT's patch grids after `return_blocks`: [(B, dim, H / p, W / p)] * 3."""
        grid_h, grid_w = images.shape[2] // self.patch_size, images.shape[3] // self.patch_size
        patches = self.patch_embed(images).flatten(2).transpose(1, 2)
        batch = patches.shape[0]  # (not len(): a traced export keeps the batch size free)
        x = torch.cat([self.cls_token.expand(batch, -1, -1), self.register_tokens.expand(batch, -1, -1), patches], 1)
        exact = torch.float64 if x.dtype == torch.float64 else torch.float32  # (attention casts to its dtype)
        rotary = rope_tables(grid_h, grid_w, x.shape[-1] // self.num_heads, self.rope_theta, images.device, exact)
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x, rotary)
            if i in self.return_blocks:
                normed = self.tap_norm == "all" or self.tap_norm == "last" and i == len(self.blocks) - 1  # else none
                tokens = self.norm(x) if normed else x
                taps.append(tokens[:, -grid_h * grid_w :].transpose(1, 2).unflatten(2, (grid_h, grid_w)))
        return taps

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        height, width = images.shape[2:]
        if height % self.stride or width % self.stride:
            raise ValueError(f"input {height}x{width}: both sides must be multiples of {self.stride}")
        details = self.adapter(images)
        return [
            torch.cat([F.interpolate(tap, size=detail.shape[2:], mode="bilinear", align_corners=False), detail], 1)
            for tap, detail in zip(self.taps(images), details)
        ]
