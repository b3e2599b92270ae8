"""RT-DETR's hybrid encoder: attention within the top level (AIFI), then CNN fusion across levels (CCFM).

backbone maps --input_proj--> hidden_dim maps
top level --AIFI (self-attention over all its pixels)-->
top-down path: lateral conv, upsample, concat with the next finer level, fusion block   (FPN)
bottom-up path: stride-2 conv, concat with the next coarser level, fusion block          (PAN)

RT-DETR fuses with RepC3 blocks and downsamples with a 3x3 conv; D-FINE fuses with ELAN blocks
(`block: elan`), downsamples with SCDown and has no activation in its lateral convs (`lateral_act: null`);
DEIMv2 adds the two levels instead of concatenating them (`fuse: sum`) and fuses with ELAN5 blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention
from .common import activation
from .conv import ConvNormAct
from .csp import ELAN, ELAN5, RepC3, SCDown
from .validation import Count


def sincos_position_embedding(height: int, width: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """2-D sine-cosine position embedding of a (height, width) grid flattened row-major.

    Returns (1, height * width, dim): [sin(y), cos(y), sin(x), cos(x)] blocks of dim / 4 frequencies each.
    """
    if dim % 4:
        raise ValueError(f"sincos position embedding needs a dim divisible by 4, got {dim}")
    grid_y, grid_x = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    y = grid_y.flatten()[:, None] @ omega[None]
    x = grid_x.flatten()[:, None] @ omega[None]
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1)[None]


class TransformerEncoderLayer(nn.Module):
    """Post-norm transformer layer; positions are added to queries and keys only.

    Shapes: (B, L, D) with pos (1, L, D) -> (B, L, D).
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, act: str = "gelu", dropout: float = 0.0):
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        q = k = x + pos
        x = self.norm1(x + self.dropout(self.self_attn(q, k, x)))
        return self.norm2(x + self.dropout(self.linear2(self.dropout(self.act(self.linear1(x))))))


class AIFI(TransformerEncoderLayer):
    """Attention-based intra-scale feature interaction: one encoder layer over a feature map's pixels.

    Shapes: (B, D, H, W) -> (B, D, H, W).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        _, dim, height, width = x.shape
        pos = sincos_position_embedding(height, width, dim).to(x.device, x.dtype)
        tokens = super().forward(x.flatten(2).transpose(1, 2), pos)
        return tokens.transpose(1, 2).reshape(-1, dim, height, width)


FUSION_BLOCKS = ("repc3", "elan", "elan5")
DOWNSAMPLES = ("conv", "scdown")
FUSIONS = ("concat", "sum")


class HybridEncoder(nn.Module):
    """AIFI on the coarsest level + FPN/PAN fusion.

    Shapes: [(B, in_channels[i], H_i, W_i)] fine to coarse -> [(B, hidden_dim, H_i, W_i)] fine to coarse.
    `csp_blocks`: RepConvs per RepC3 (in an ELAN: per each of its two CSP blocks). `expansion`: RepC3's hidden
    width as a fraction of hidden_dim; an ELAN's branches are round(expansion * hidden_dim // 2) wide (D-FINE's
    rule). `fuse`: how a level meets the one resampled to it (`concat`, or DEIMv2's `sum`). `trailing_conv`: ELAN5's
    CSP blocks end in a 3x3 conv.
    """

    def __init__(
        self,
        in_channels: list[int],
        in_strides: list[int],
        hidden_dim: int = 256,
        ffn_dim: int = 1024,
        num_heads: Count = 8,
        attn_act: str = "gelu",
        csp_blocks: Count = 3,
        expansion: float = 1.0,
        act: str = "silu",
        dropout: float = 0.0,
        norm_eps: float = 1e-5,
        block: str = "repc3",
        downsample: str = "conv",
        lateral_act: str | None = "silu",
        fuse: str = "concat",
        trailing_conv: bool = False,
    ):
        super().__init__()
        if block not in FUSION_BLOCKS or downsample not in DOWNSAMPLES or fuse not in FUSIONS:
            raise ValueError(f"block={block!r}, downsample={downsample!r}, fuse={fuse!r}: use {FUSION_BLOCKS}, "
                             f"{DOWNSAMPLES}, {FUSIONS}")  # fmt: skip
        levels = len(in_channels)
        conv = {"act": act, "norm_eps": norm_eps}
        self.fuse = fuse
        fused = hidden_dim if fuse == "sum" else 2 * hidden_dim
        width = round(expansion * hidden_dim // 2)

        def fusion() -> nn.Module:
            if block == "elan5":
                return ELAN5(fused, hidden_dim, width, csp_blocks, trailing_conv, **conv)
            if block == "elan":
                return ELAN(fused, hidden_dim, width, csp_blocks, **conv)
            return RepC3(fused, hidden_dim, csp_blocks, expansion, **conv)

        def downsampling() -> nn.Module:
            if downsample == "scdown":
                return SCDown(hidden_dim, norm_eps)
            return ConvNormAct(hidden_dim, hidden_dim, 3, 2, **conv)

        self.input_proj = nn.ModuleList(ConvNormAct(c, hidden_dim, 1, act=None, norm_eps=norm_eps) for c in in_channels)
        self.aifi = AIFI(hidden_dim, ffn_dim, num_heads, attn_act, dropout)
        # Index 0 of the top-down modules works on the coarsest level.
        self.lateral_convs = nn.ModuleList(
            ConvNormAct(hidden_dim, hidden_dim, 1, act=lateral_act, norm_eps=norm_eps) for _ in range(levels - 1)
        )
        self.fpn_blocks = nn.ModuleList(fusion() for _ in range(levels - 1))
        self.downsample_convs = nn.ModuleList(downsampling() for _ in range(levels - 1))
        self.pan_blocks = nn.ModuleList(fusion() for _ in range(levels - 1))
        self.out_channels = [hidden_dim] * levels
        self.out_strides = list(in_strides)

    def merge(self, resampled: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """A level and the map resampled to its size, as the fusion blocks take them."""
        return resampled + level if self.fuse == "sum" else torch.cat([resampled, level], dim=1)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        projected = [proj(f) for proj, f in zip(self.input_proj, features)]
        # Top-down: `laterals` collects each coarse level after its lateral conv, coarsest first.
        top = self.aifi(projected[-1])
        laterals = []
        for i, finer in enumerate(reversed(projected[:-1])):
            top = self.lateral_convs[i](top)
            laterals.append(top)
            upsampled = F.interpolate(top, scale_factor=2.0, mode="nearest")
            top = self.fpn_blocks[i](self.merge(upsampled, finer))
        # Bottom-up: start from the finest fused map, walk back to the coarsest lateral.
        outputs = [top]
        for i, coarser in enumerate(reversed(laterals)):
            downsampled = self.downsample_convs[i](outputs[-1])
            outputs.append(self.pan_blocks[i](self.merge(downsampled, coarser)))
        return outputs
