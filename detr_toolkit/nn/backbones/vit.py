"""A plain Vision Transformer as a detection backbone, in the shape of RF-DETR (DINOv2) and LW-DETR (ViT):

    image (B, 3, H, W) --patch_embed--> patch tokens on an (H/p, W/p) grid, + interpolated position embeddings
    -> cut into window_grid x window_grid windows, each with its own copy of the class/register tokens
    -> blocks: pre-norm self-attention (within a window, or across all windows in `global_blocks`) + MLP,
       each residual scaled by a learned layer scale
    -> the outputs of blocks `out_indices`, put back on the grid: (B, dim, H/p, W/p) each
    -> projector: one map per scale factor, (B, out_channels, H/p * s, W/p * s)

Windows keep attention cost linear in the image size; the few global blocks let information cross them.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import MultiHeadAttention
from ..common import activation
from ..projector import MultiScaleProjector
from ..validation import Count, CountOrZero, Index


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch (CaiT). Shapes: (..., dim) -> (..., dim)."""

    def __init__(self, dim: int, init_value: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class ViTMLP(nn.Module):
    """fc1 -> activation -> fc2. Shapes: (..., dim) -> (..., dim)."""

    def __init__(self, dim: int, hidden_dim: int, act: str = "gelu"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = activation(act)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    """Pre-norm transformer block with layer scale; attention within windows unless `global_attention`.

    Shapes: tokens (B * windows, T, dim) -> (B * windows, T, dim), T tokens per window.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        global_attention: bool,
        windows: int,
        layer_scale: float = 1.0,
        norm_eps: float = 1e-6,
        act: str = "gelu",
    ):
        super().__init__()
        self.global_attention = global_attention
        self.windows = windows
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(dim, num_heads)
        self.ls1 = LayerScale(dim, layer_scale)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = ViTMLP(dim, int(dim * mlp_ratio), act)
        self.ls2 = LayerScale(dim, layer_scale)

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the layer scales into the linear layers before them (inference only): diag(g) (W x + b)."""
        for scale, linear in ((self.ls1, self.attn.out_proj), (self.ls2, self.mlp.fc2)):
            if isinstance(scale, LayerScale):
                linear.weight.mul_(scale.gamma[:, None])
                linear.bias.mul_(scale.gamma)
        self.ls1, self.ls2 = nn.Identity(), nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = self.norm1(x)
        if self.global_attention:  # all windows of an image become one sequence
            y = y.reshape(-1, self.windows * shape[1], shape[2])
        x = x + self.ls1(self.attn(y, y, y).reshape_as(x))
        return x + self.ls2(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """Shapes: (B, 3, H, W), H and W multiples of `patch_size * window_grid` -> [(B, C, H_i, W_i)] per projector scale.

    Args:
        dim, depth, num_heads, mlp_ratio: the transformer's width, number of blocks, heads, MLP expansion.
        patch_size: side of the square patches (14 for DINOv2, 16 for LW-DETR's ViT).
        pos_embed_size: side of the grid the position embeddings were trained at; they are resized
            (bicubic) to the input's grid.
        pos_embed_antialias: antialias that resize (RF-DETR/DINOv2 do, LW-DETR does not).
        class_token: prepend a class token (DINOv2); the position table has a slot for it either way.
        num_registers: register tokens after the class token (DINOv2 with registers).
        window_grid: the token grid is cut into window_grid x window_grid windows (1: no windows).
        global_blocks: indices of the blocks that attend across windows.
        out_indices: blocks whose outputs feed the projector.
        out_norm: layer-normalise the tapped outputs (DINOv2's final norm, shared by all taps).
        layer_scale: initial value of the layer scales.
        projector: keyword arguments of `MultiScaleProjector` (scale_factors, out_channels, ...).
    """

    def __init__(
        self,
        dim: int = 384,
        depth: Count = 12,
        num_heads: Count = 6,
        mlp_ratio: float = 4.0,
        patch_size: int = 14,
        pos_embed_size: int = 37,
        pos_embed_antialias: bool = True,
        class_token: bool = True,
        num_registers: CountOrZero = 0,
        window_grid: int = 4,
        global_blocks: tuple[Index, ...] = (2, 5, 8, 11),
        out_indices: tuple[Index, ...] = (1, 4, 7, 10),
        out_norm: bool = True,
        layer_scale: float = 1.0,
        norm_eps: float = 1e-6,
        act: str = "gelu",
        projector: Annotated[dict, MultiScaleProjector] | None = None,
    ):
        super().__init__()
        if not all(0 <= i < depth for i in (*global_blocks, *out_indices)):
            raise ValueError(
                f"global_blocks {list(global_blocks)} and out_indices {list(out_indices)} must be < {depth}"
            )
        self.patch_size, self.window_grid = patch_size, window_grid
        self.pos_embed_antialias = pos_embed_antialias
        self.out_indices = list(out_indices)
        self.num_prefix = int(class_token) + num_registers
        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        self.registers = nn.Parameter(torch.zeros(1, num_registers, dim)) if num_registers else None
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pos_embed_size**2, dim))  # slot 0: the class token's
        windows = window_grid**2
        self.blocks = nn.ModuleList(
            ViTBlock(dim, num_heads, mlp_ratio, i in global_blocks, windows, layer_scale, norm_eps, act)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if out_norm else None
        self.projector = MultiScaleProjector([dim] * len(out_indices), **(projector or {}))
        self.out_channels = self.projector.out_channels
        strides = [patch_size / scale for scale in self.projector.scale_factors]
        self.out_strides = [int(s) if s.is_integer() else s for s in strides]
        self.stride = patch_size * window_grid  # inputs must tile into whole windows of whole patches
        self.fixed_position: tuple[torch.Tensor, torch.Tensor] | None = None  # see fix_input_size
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    @torch.no_grad()
    def fix_input_size(self, height: int, width: int) -> None:
        """Resize the position embeddings for (height, width) inputs once, and keep them (for export: ONNX has no
        antialiased bicubic resize, and an exported graph has a fixed input size anyway)."""
        self.fixed_position = None
        cls_pos, patch_pos = self.position_embeddings(height // self.patch_size, width // self.patch_size)
        self.fixed_position = cls_pos.clone(), patch_pos.clone()

    def position_embeddings(self, grid_h: int, grid_w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> class-token embedding (1, 1, dim) and patch embeddings (1, grid_h, grid_w, dim) for this grid."""
        if self.fixed_position is not None and self.fixed_position[1].shape[1:3] == (grid_h, grid_w):
            return self.fixed_position
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        side = int(patch_pos.shape[1] ** 0.5)
        patch_pos = patch_pos.reshape(1, side, side, -1)
        if (grid_h, grid_w) != (side, side):
            resized = F.interpolate(
                patch_pos.permute(0, 3, 1, 2).float(),
                size=(grid_h, grid_w),
                mode="bicubic",
                align_corners=False,
                antialias=self.pos_embed_antialias,
            )
            patch_pos = resized.to(patch_pos.dtype).permute(0, 2, 3, 1)
        return cls_pos, patch_pos

    def to_windows(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, gh, gw, C) -> (B * n * n, gh/n * gw/n, C), windows in row-major order, n = window_grid."""
        gh, gw, c = grid.shape[1:]
        n = self.window_grid
        grid = grid.reshape(-1, n, gh // n, n, gw // n, c).permute(0, 1, 3, 2, 4, 5)
        return grid.reshape(-1, (gh // n) * (gw // n), c)  # -1: B * n * n (a free batch in exports)

    def from_windows(self, tokens: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
        """Inverse of `to_windows` for the patch tokens: -> (B, C, gh, gw)."""
        n = self.window_grid
        c = tokens.shape[-1]
        grid = tokens.reshape(-1, n, n, gh // n, gw // n, c).permute(0, 5, 1, 3, 2, 4)
        return grid.reshape(-1, c, gh, gw)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.projector(self.taps(images))

    def taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The transformer's patch grids after the blocks `out_indices` (normed where `out_norm`): [(B, dim, H / p,
        W / p)] per index."""
        h, w = images.shape[2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"input {h}x{w}: both sides must be multiples of {self.stride} (patch x window grid)")
        gh, gw = h // self.patch_size, w // self.patch_size
        cls_pos, patch_pos = self.position_embeddings(gh, gw)
        tokens = self.to_windows(self.patch_embed(images).permute(0, 2, 3, 1) + patch_pos)
        prefix = []
        if self.cls_token is not None:
            prefix.append((self.cls_token + cls_pos).expand(tokens.shape[0], -1, -1))
        if self.registers is not None:
            prefix.append(self.registers.expand(tokens.shape[0], -1, -1))
        x = torch.cat([*prefix, tokens], dim=1) if prefix else tokens
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.out_indices:
                tapped = self.norm(x) if self.norm is not None else x
                taps.append(self.from_windows(tapped[:, self.num_prefix :], gh, gw))
        return taps
