"""Multi-head attention through `torch.nn.functional.scaled_dot_product_attention`.

Holds separate q/k/v projections (so query and key may differ from value, as DETR adds positions to
q and k only); checkpoints that pack them (`in_proj_weight` of `nn.MultiheadAttention`) are split on import.
Long bfloat16 sequences on a CPU without AMX go through `chunked_attention` instead (see there).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of the last N tokens: x * cos + rotate_half(x) * sin, rotate_half(a, b) = (-b, a).
    Shapes: x (B, heads, L, d), cos and sin (N, d) -> (B, heads, L, d), in x's dtype."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    prefix, tokens = x.split([x.shape[-2] - cos.shape[-2], cos.shape[-2]], dim=-2)
    first, second = tokens.chunk(2, dim=-1)
    rotated = tokens * cos + torch.cat([-second, first], dim=-1) * sin
    return torch.cat([prefix, rotated], dim=-2)


CHUNKED_FROM = 1024  # keys from which bfloat16 attention on a CPU is computed in chunks of queries
QUERY_CHUNK = 256  # queries per chunk: their scores (heads x 256 x keys) stay in the CPU's caches


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v, `QUERY_CHUNK` queries at a time, with plain matmuls. Shapes: (B, heads, L, d)
    -> (B, heads, L, d).

    For bfloat16 on CPUs without AMX (`cpu_has_amx`), PyTorch's flash-attention kernel is no faster than in
    float32, while matmuls use the CPU's bfloat16 dot products: a DINOv3 ViT layer of 1601 tokens takes 8 ms this
    way against 14 ms.
    The price is precision: the attention weights are rounded to bfloat16 before they weigh the values (about twice
    the flash kernel's error in bfloat16), which `half=True` accepts.
    """
    scale = q.shape[-1] ** -0.5
    keys = k.transpose(-1, -2).contiguous()
    out = torch.empty_like(q)
    for start in range(0, q.shape[-2], QUERY_CHUNK):
        scores = torch.matmul(q[..., start : start + QUERY_CHUNK, :] * scale, keys)
        out[..., start : start + QUERY_CHUNK, :] = torch.matmul(scores.softmax(-1), v)
    return out


@functools.cache
def cpu_has_amx() -> bool:
    """Whether this CPU multiplies bfloat16 tiles natively (AMX). With AMX, PyTorch's flash-attention kernel is
    the faster way in bfloat16: a DINOv3 ViT layer of 1601 tokens takes 3.9 ms through it against 8.4 ms in
    chunks (Intel Xeon, 2 cores); without, it is no faster than in float32 and the chunks win."""
    is_amx_supported = getattr(torch.cpu, "_is_amx_tile_supported", None)  # (torch's own check; private)
    return bool(is_amx_supported is not None and is_amx_supported())


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
        if (
            attn_mask is None
            and not self.training
            and q.dtype == torch.bfloat16
            and q.device.type == "cpu"
            and (k.shape[-2] >= CHUNKED_FROM and not torch.jit.is_tracing())
            and not cpu_has_amx()
        ):
            out = chunked_attention(q, k, v)
        else:
            out = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=None if attn_mask is None else ~attn_mask,
                dropout_p=self.dropout if self.training else 0.0,
            )
        return self.out_proj(out.transpose(1, 2).flatten(2))
