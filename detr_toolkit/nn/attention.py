"""Multi-head attention through `torch.nn.functional.scaled_dot_product_attention`.

Holds separate q/k/v projections (so query and key may differ from value, as DETR adds positions to
q and k only); checkpoints that pack them (`in_proj_weight` of `nn.MultiheadAttention`) are split on import.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of the last N tokens: x * cos + rotate_half(x) * sin, rotate_half(a, b) = (-b, a).
    Shapes: x (B, heads, L, d), cos and sin (N, d) -> (B, heads, L, d)."""
    prefix, tokens = x.split([x.shape[-2] - cos.shape[-2], cos.shape[-2]], dim=-2)
    first, second = tokens.chunk(2, dim=-1)
    rotated = tokens * cos + torch.cat([-second, first], dim=-1) * sin
    return torch.cat([prefix, rotated], dim=-2)


class MultiHeadAttention(nn.Module):
    """Shapes: query (B, Lq, D), key (B, Lk, D), value (B, Lk, D) -> (B, Lq, D).

    `attn_mask`: (Lq, Lk) boolean, True where attention is *blocked* (the `nn.MultiheadAttention` convention).
    `rotary`: (cos, sin) tables (N, D / heads) of a rotary position embedding for the last N tokens of query and
    key (the tokens before them, e.g. class and register tokens, are not rotated). `key_bias`: whether the key
    projection has a bias (DINOv3's small ViTs have none).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, key_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=key_bias)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, heads, L, D / heads)."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        q = self._split_heads(self.q_proj(query))
        k = self._split_heads(self.k_proj(key))
        v = self._split_heads(self.v_proj(value))
        if rotary is not None:
            q, k = rotate(q, *rotary), rotate(k, *rotary)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=None if attn_mask is None else ~attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(out.transpose(1, 2).flatten(2))
