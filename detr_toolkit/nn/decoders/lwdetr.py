"""The decoder of LW-DETR and RF-DETR: two-stage proposals, learned queries, fixed ("lite") reference boxes.

    encoder maps (already hidden_dim wide) -> tokens (B, S, D), one proposal box per token (anchor + delta)
    top-k tokens by best class score -> reference boxes = the proposals moved by learned per-query offsets
    queries: learned content embeddings; positions: a sine embedding of the reference boxes through an MLP
    layers: self-attention, deformable cross-attention, FFN (the RT-DETR family's `DecoderLayer`)
    heads on the normalised last layer: class logits, and a box delta applied to the reference box

Boxes are re-parameterised (Deformable-DETR's "bbox reparam"): a delta (dx, dy, dw, dh) moves the centre by
(dx * w, dy * h) and scales the size by exp(dw), exp(dh). Training uses `num_groups` independent query groups
(Group DETR); inference uses the first.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..common import MLP, init_detection_heads
from ..validation import Count, Queries
from .anchors import anchor_boxes
from .layer import DecoderLayer
from .queries import gather_tokens, top_k_indices


def refine_boxes(boxes: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Shapes: boxes (..., 4) cxcywh, deltas (..., 4) -> (..., 4) cxcywh, the box re-parameterisation above."""
    centre = deltas[..., :2] * boxes[..., 2:] + boxes[..., :2]
    return torch.cat([centre, deltas[..., 2:].exp() * boxes[..., 2:]], dim=-1)


def sine_box_embedding(boxes: torch.Tensor, dim_per_coord: int, temperature: float = 10000.0) -> torch.Tensor:
    """Shapes: (..., 4) cxcywh in 0..1 -> (..., 4 * dim_per_coord), coordinates ordered y, x, w, h (DETR's).

    Each coordinate c gives (sin(2 pi c / t_0), cos(2 pi c / t_0), sin(2 pi c / t_1), ...), t_i = T^(2i / dim).
    """
    exponents = torch.arange(dim_per_coord, dtype=torch.float32, device=boxes.device).div(2, rounding_mode="floor")
    periods = temperature ** (2 * exponents / dim_per_coord)
    angles = boxes[..., None] * (2 * math.pi) / periods  # (..., 4, dim)
    embedded = torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], dim=-1).flatten(-2)
    x, y, w, h = embedded.unbind(-2)
    return torch.cat([y, x, w, h], dim=-1).to(boxes.dtype)


class LWDETRDecoder(nn.Module):
    """Shapes: [(B, hidden_dim, H_i, W_i)] -> {"boxes": (B, Q, 4) cxcywh in 0..1, "logits": (B, Q, num_classes)}."""

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        hidden_dim: int = 256,
        num_queries: Queries = 300,
        num_layers: Count = 3,
        num_heads: Count = 8,
        cross_heads: Count = 16,
        num_points: Count = 4,
        ffn_dim: int = 2048,
        act: str = "relu",
        dropout: float = 0.0,
        num_groups: Count = 13,
        anchor_size: float = 0.05,
    ):
        super().__init__()
        if any(c != hidden_dim for c in in_channels):
            raise ValueError(f"decoder inputs must all have hidden_dim={hidden_dim} channels, got {in_channels}")
        self.num_queries, self.num_classes, self.num_groups = num_queries, num_classes, num_groups
        self.hidden_dim = hidden_dim
        self.return_queries = False  # set by the detector for its mask head: outputs "queries" too
        self.anchor_size = anchor_size
        self.one_to_many_queries = 0  # training only, set by the trainer: no weights, nothing at inference
        self.query_feat = nn.Embedding(num_queries * num_groups, hidden_dim)
        self.query_ref = nn.Embedding(num_queries * num_groups, 4)  # offsets from the proposal, in reparam units
        self.enc_output = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.LayerNorm(hidden_dim)) for _ in range(num_groups)
        )
        self.enc_score_head = nn.ModuleList(nn.Linear(hidden_dim, num_classes) for _ in range(num_groups))
        self.enc_bbox_head = nn.ModuleList(MLP(hidden_dim, hidden_dim, 4, num_layers=3) for _ in range(num_groups))
        self.layers = nn.ModuleList(
            DecoderLayer(hidden_dim, num_heads, ffn_dim, len(in_channels), num_points, act, dropout, cross_heads)
            for _ in range(num_layers)
        )
        self.query_pos_head = MLP(2 * hidden_dim, hidden_dim, hidden_dim, num_layers=2)
        self.norm = nn.LayerNorm(hidden_dim)
        self.score_head = nn.Linear(hidden_dim, num_classes)
        self.bbox_head = MLP(hidden_dim, hidden_dim, 4, num_layers=3)
        self._anchor_cache: tuple[list, torch.Tensor, torch.Tensor] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Class biases at prior 0.01, box deltas and query offsets at zero."""
        init_detection_heads([self.score_head, *self.enc_score_head], [self.bbox_head, *self.enc_bbox_head])
        nn.init.zeros_(self.query_ref.weight)

    def _anchors(self, shapes: list[tuple[int, int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Proposal boxes (1, S, 4) (zero where invalid) and valid (1, S, 1) for these level shapes, cached."""
        cache = self._anchor_cache
        if cache is None or cache[0] != shapes or cache[1].device != device:
            anchors, valid = anchor_boxes(shapes, self.anchor_size, device=device)
            self._anchor_cache = cache = (shapes, anchors * valid, valid)
        return cache[1], cache[2]

    def select_queries(
        self, tokens: torch.Tensor, shapes: list[tuple[int, int]], group: int = 0, count: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score every token as a proposal with group `group`'s heads -> the `count` (default num_queries) best
        proposals, best first: boxes (B, K, 4) and class logits (B, K, C)."""
        anchors, valid = self._anchors(shapes, tokens.device)
        memory = self.enc_output[group](tokens * valid)
        scores = self.enc_score_head[group](memory).masked_fill(~valid, float("-inf"))
        proposals = refine_boxes(anchors, self.enc_bbox_head[group](memory))
        index = top_k_indices(scores, count or self.num_queries)
        return gather_tokens(proposals, index), gather_tokens(scores, index)

    def forward(self, features: list[torch.Tensor], targets: list[dict] | None = None) -> dict[str, torch.Tensor]:
        """Inference: {"boxes", "logits"} of the first query group (and with `return_queries` its normalised last
        layer's "queries" (B, Q, D), for a mask head). Training: all groups and layers, see below.

        Training returns "boxes" (L, B, G * Q, 4) and "logits" (L, B, G * Q, C) per layer, the proposals
        "enc_boxes" (B, G * Q, 4) and "enc_logits" (B, G * Q, C), and "groups": G, so that the criterion
        matches every group to the objects on its own (`targets` are not used: no denoising here).
        With `one_to_many_queries` the first group's next-best proposals (rounded up to R more groups of Q, with
        the first group's query embeddings) form a one-to-many branch: the same outputs over its R * Q queries
        under "one_to_many" (each group attends only within itself, as all groups do). With `return_queries`,
        the first group's last layer "queries" (B, Q, D), for a mask head.
        """
        shapes = [tuple(f.shape[2:]) for f in features]
        tokens = torch.cat([f.flatten(2) for f in features], dim=2).transpose(1, 2)
        groups = self.num_groups if self.training else 1
        extra_groups = max(min(math.ceil(self.one_to_many_queries / self.num_queries),
                               tokens.shape[1] // self.num_queries - 1), 0) if self.training else 0  # fmt: skip
        # Group 0 selects its own queries and, behind them, the one-to-many branch's, in one top-k.
        first_boxes, first_logits = self.select_queries(tokens, shapes, 0, self.num_queries * (1 + extra_groups))
        selected = [(first_boxes[:, : self.num_queries], first_logits[:, : self.num_queries])]
        selected += [self.select_queries(tokens, shapes, g) for g in range(1, groups)]
        k = sum(boxes.shape[1] for boxes, _ in selected)
        query_ref, query_feat = self.query_ref.weight[:k], self.query_feat.weight[:k]
        if extra_groups:
            selected.append((first_boxes[:, self.num_queries :], first_logits[:, self.num_queries :]))
            query_ref = torch.cat([query_ref, self.query_ref.weight[: self.num_queries].repeat(extra_groups, 1)])
            query_feat = torch.cat([query_feat, self.query_feat.weight[: self.num_queries].repeat(extra_groups, 1)])
        proposals = torch.cat([boxes for boxes, _ in selected], 1)
        reference = refine_boxes(proposals.detach(), query_ref)
        queries = query_feat.expand(tokens.shape[0], -1, -1)
        query_pos = self.query_pos_head(sine_box_embedding(reference, tokens.shape[-1] // 2))
        layer_outputs = []
        for layer in self.layers:
            queries = layer(queries, reference, query_pos, tokens, shapes, groups=groups + extra_groups)
            if self.training:
                layer_outputs.append(self.norm(queries))
        if not self.training:
            queries = self.norm(queries)
            outputs = {"boxes": refine_boxes(reference, self.bbox_head(queries)), "logits": self.score_head(queries)}
            return {**outputs, "queries": queries} if self.return_queries else outputs
        hidden = torch.stack(layer_outputs)
        outputs = {
            "boxes": refine_boxes(reference, self.bbox_head(hidden)),
            "logits": self.score_head(hidden),
            "enc_boxes": proposals,
            "enc_logits": torch.cat([logits for _, logits in selected], 1),
            "groups": groups,
        }
        if self.return_queries:  # the first group's, as at inference: masks of every group would cost G times more
            outputs["queries"] = hidden[-1, :, : selected[0][0].shape[1]]
        if extra_groups:
            branch = {"groups": extra_groups}
            for name, dim in (("boxes", 2), ("logits", 2), ("enc_boxes", 1), ("enc_logits", 1)):
                outputs[name], branch[name] = outputs[name].split([k, outputs[name].shape[dim] - k], dim)
            outputs["one_to_many"] = branch
        return outputs
