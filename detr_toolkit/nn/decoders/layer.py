"""The deformable decoder layer every DETR family here shares: self-attention among the queries, deformable
cross-attention into the encoder tokens, feed-forward network (post-norm, as Deformable DETR).

D-FINE gates the cross-attention's result into the queries (`gateway`); DEIMv2 normalises with RMSNorm
(`norm: rms`) and feeds forward through a SwiGLU (`ffn: swiglu`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..attention import MultiHeadAttention
from ..common import RMSNorm, SwiGLU, activation
from .deformable_attention import MSDeformableAttention

NORMS = {"layer": nn.LayerNorm, "rms": RMSNorm}
FFNS = ("mlp", "swiglu")


def norm_layer(kind: str, dim: int) -> nn.Module:
    """LayerNorm (`layer`) or RMSNorm (`rms`) over the last dimension."""
    if kind not in NORMS:
        raise ValueError(f"norm={kind!r}: use one of {sorted(NORMS)}")
    return NORMS[kind](dim)


class Gate(nn.Module):
    """D-FINE's gateway after the cross-attention: norm(g1 * residual + g2 * attended), the gates a sigmoid of a
    linear map of both. Shapes: (B, Q, D) twice -> (B, Q, D)."""

    def __init__(self, dim: int, norm: str = "layer"):
        super().__init__()
        self.gate = nn.Linear(2 * dim, 2 * dim)
        self.norm = norm_layer(norm, dim)

    def forward(self, residual: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        keep, take = torch.sigmoid(self.gate(torch.cat([residual, attended], dim=-1))).chunk(2, dim=-1)
        return self.norm(keep * residual + take * attended)


class DecoderLayer(nn.Module):
    """Self-attention over queries, deformable cross-attention into the encoder tokens, FFN (post-norm).

    Shapes: queries (B, Q, D), reference boxes (B, Q, 4), query_pos (B, Q, D), tokens (B, S, D) -> (B, Q, D).
    `cross_heads` defaults to `num_heads` (RT-DETR); LW-DETR and RF-DETR use 8 self- and 16 cross-attention heads.
    `num_points`, `offset_scale`, `sampling`, `project_values`: see `MSDeformableAttention`. `gateway`: D-FINE's
    `Gate` instead of the residual and norm after the cross-attention. `norm`: `layer` or `rms`; `ffn`: `mlp`
    (ffn_dim wide, `act`) or `swiglu` (ffn_dim / 2 wide, as DEIMv2 counts it).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        num_levels: int,
        num_points: int | list[int],
        act: str,
        dropout: float,
        cross_heads: int | None = None,
        offset_scale: float = 0.5,
        sampling: str = "bilinear",
        project_values: bool = True,
        gateway: bool = False,
        norm: str = "layer",
        ffn: str = "mlp",
    ):
        super().__init__()
        if ffn not in FFNS:
            raise ValueError(f"ffn={ffn!r}: use one of {FFNS}")
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.norm1 = norm_layer(norm, dim)
        self.cross_attn = MSDeformableAttention(
            dim, cross_heads or num_heads, num_levels, num_points, offset_scale, sampling, project_values
        )
        self.gateway = Gate(dim, norm) if gateway else None
        self.norm2 = None if gateway else norm_layer(norm, dim)
        self.swiglu = SwiGLU(dim, ffn_dim // 2) if ffn == "swiglu" else None
        self.linear1 = nn.Linear(dim, ffn_dim) if ffn == "mlp" else None
        self.act = activation(act)
        self.linear2 = nn.Linear(ffn_dim, dim) if ffn == "mlp" else None
        self.norm3 = norm_layer(norm, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        queries: torch.Tensor,
        reference_boxes: torch.Tensor,
        query_pos: torch.Tensor,
        tokens: torch.Tensor,
        shapes: list[tuple[int, int]],
        attn_mask: torch.Tensor | None = None,
        groups: int = 1,
    ) -> torch.Tensor:
        """`groups` > 1: the queries are that many independent groups (Group DETR), attending only within their own."""
        q = k = queries + query_pos
        if groups == 1:
            attended = self.self_attn(q, k, queries, attn_mask)
        else:  # groups go to the batch axis: (B, G * Q, D) -> (B * G, Q, D) and back
            q, k, v = (t.unflatten(1, (groups, -1)).flatten(0, 1) for t in (q, k, queries))
            attended = self.self_attn(q, k, v, attn_mask).unflatten(0, (-1, groups)).flatten(1, 2)
        queries = self.norm1(queries + self.dropout(attended))
        attended = self.dropout(self.cross_attn(queries + query_pos, reference_boxes, tokens, shapes))
        queries = self.norm2(queries + attended) if self.gateway is None else self.gateway(queries, attended)
        if self.swiglu is not None:
            ffn = self.swiglu(queries)
        else:
            ffn = self.linear2(self.dropout(self.act(self.linear1(queries))))
        return self.norm3(queries + self.dropout(ffn))
