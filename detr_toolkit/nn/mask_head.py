"""Instance masks from a detector's queries: each query's embedding dotted with a per-pixel embedding (RF-DETR's
segmentation head; D-FINE-seg and MaskDINO make masks the same way).

    finest encoder map (B, D, h, w) --bilinear--> (B, D, H/r, W/r)    H, W: the input's size; r: `downsample`
        -> one `PixelBlock` per decoder layer, in turn; after each, a 1x1 conv: that layer's pixel embeddings
    a decoder layer's normalised queries (B, Q, D) -> pre-norm MLP block -> linear: query embeddings
    mask logits (B, Q, H/r, W/r) = query embeddings . pixel embeddings + bias

Only the last layer's (the eval layer's) masks are made, in training too (the pixel blocks still run in turn);
RF-DETR also trains each earlier layer's masks, which would cost a mask per query and layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import activation
from .validation import Count


class PixelBlock(nn.Module):
    """A ConvNeXt-style residual block: 3x3 depthwise conv, LayerNorm over channels, linear, activation.

    Shapes: (B, D, H, W) -> (B, D, H, W).
    """

    def __init__(self, dim: int, act: str = "gelu", norm_eps: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.pwconv = nn.Linear(dim, dim)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # channels last for the norm and the linear layer
        return x + self.act(self.pwconv(self.norm(y))).permute(0, 3, 1, 2)


class QueryBlock(nn.Module):
    """Pre-norm residual MLP over each query: x + fc2(act(fc1(norm(x)))). Shapes: (..., D) -> (..., D)."""

    def __init__(self, dim: int, ffn_dim: int, act: str = "gelu", norm_eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.act = activation(act)
        self.fc2 = nn.Linear(ffn_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class MaskHead(nn.Module):
    """Shapes: encoder maps [(B, C_i, H_i, W_i)], the decoder's last queries (B, Q, D), input size (H, W)
    -> mask logits (B, Q, H / downsample, W / downsample).

    The pixel map is the finest encoder map, brought to the queries' width `query_dim` by a 1x1 conv when it has
    other than `query_dim` channels. `num_blocks`: pixel blocks, one per decoder layer; `ffn_dim`: the query MLP's
    width; `downsample`: the input size over the masks' size.
    """

    def __init__(
        self,
        in_channels: list[int],
        in_strides: list[int],
        query_dim: int,
        num_blocks: Count = 3,
        ffn_dim: int = 1024,
        downsample: Count = 4,
        act: str = "gelu",
        pixel_norm_eps: float = 1e-6,
        query_norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.level = in_strides.index(min(in_strides))
        self.downsample = downsample
        hidden_dim = query_dim
        channels = in_channels[self.level]
        self.input_proj = nn.Conv2d(channels, hidden_dim, 1) if channels != hidden_dim else nn.Identity()
        self.blocks = nn.ModuleList(PixelBlock(hidden_dim, act, pixel_norm_eps) for _ in range(num_blocks))
        self.pixel_proj = nn.Conv2d(hidden_dim, hidden_dim, 1)
        self.query_block = QueryBlock(hidden_dim, ffn_dim, act, query_norm_eps)
        self.query_proj = nn.Linear(hidden_dim, hidden_dim)
        self.bias = nn.Parameter(torch.zeros(1))

    def mask_logits(self, queries: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Queries (B, Q, D) . projected pixel embeddings (B, D, h, w) -> (B, Q, h, w)."""
        embedded = self.query_proj(self.query_block(queries))
        return torch.einsum("bqd,bdhw->bqhw", embedded, pixels) + self.bias

    def forward(self, features: list[torch.Tensor], queries: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        size = (image_size[0] // self.downsample, image_size[1] // self.downsample)
        pixels = F.interpolate(self.input_proj(features[self.level]), size=size, mode="bilinear", align_corners=False)
        for block in self.blocks:
            pixels = block(pixels)
        return self.mask_logits(queries, self.pixel_proj(pixels))
