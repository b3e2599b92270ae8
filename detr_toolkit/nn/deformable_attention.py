"""Multi-scale deformable attention (Zhu et al., Deformable DETR), in plain PyTorch with `grid_sample`.

Each query looks at `num_points` sampled locations per head and per feature level, placed around its
reference box, and mixes them with softmax weights predicted from the query itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def deformable_sample(
    value: torch.Tensor,
    shapes: list[tuple[int, int]],
    locations: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """Bilinearly sample `value` at `locations` and take the weighted sum over levels and points.

    Args:
        value: (B, S, heads, head_dim), the flattened levels of `shapes` one after another (S = sum h*w).
        shapes: [(h, w)] per level.
        locations: (B, Q, heads, levels * points, 2), x/y in 0..1 of each level's map.
        weights: (B, Q, heads, levels * points), summing to 1 over the last axis.

    Returns:
        (B, Q, heads * head_dim).
    """
    heads, head_dim = value.shape[2:]
    queries = locations.shape[1]
    num_levels = len(shapes)
    points = locations.shape[3] // num_levels
    # Per level, contiguous grids in grid_sample's -1..1 with the points before the queries, (B * heads, P, Q, 2): the
    # samples come out as (B * heads, head_dim, P, Q), so weighting and summing over points run along whole rows
    # of queries. (grid_sample on strided grids, or a weighted sum over a short last axis, is several times slower.)
    grids = (2 * locations - 1).reshape(-1, queries, heads, num_levels, points, 2)  # -1: batch (free in exports)
    grids = grids.permute(3, 0, 2, 4, 1, 5).contiguous().flatten(1, 2)  # (levels, B * heads, P, Q, 2)
    weights = weights.permute(0, 2, 3, 1).reshape(-1, num_levels, points, 1, queries)
    levels = value.split([h * w for h, w in shapes], dim=1)
    out = 0
    for level, grid, level_weights, (h, w) in zip(levels, grids, weights.unbind(1), shapes):
        level = level.permute(0, 2, 3, 1).flatten(0, 1).unflatten(-1, (h, w))  # (B * heads, head_dim, h, w)
        sampled = F.grid_sample(level, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out + (sampled * level_weights.transpose(1, 2)).sum(2)  # (B * heads, head_dim, Q)
    return out.view(-1, heads * head_dim, queries).transpose(1, 2)


class MSDeformableAttention(nn.Module):
    """Shapes: query (B, Q, D), reference boxes (B, Q, 4) cxcywh in 0..1, value (B, S, D) -> (B, Q, D)."""

    def __init__(self, dim: int = 256, num_heads: int = 8, num_levels: int = 4, num_points: int = 4):
        super().__init__()
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's init: offsets start on rays around the reference, one direction per head."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True).values).view(self.num_heads, 1, 1, 2)
        grid = grid.repeat(1, self.num_levels, self.num_points, 1)
        grid *= torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_boxes: torch.Tensor,
        value: torch.Tensor,
        shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        queries = query.shape[1]
        value = self.value_proj(value).unflatten(-1, (self.num_heads, -1))
        total_points = self.num_levels * self.num_points
        offsets = self.sampling_offsets(query).view(-1, queries, self.num_heads, total_points, 2)
        weights = self.attention_weights(query).view(-1, queries, self.num_heads, total_points).softmax(-1)
        # Offsets are in units of the reference box's half size, scaled down by the number of points.
        boxes = reference_boxes[:, :, None, None, :]
        locations = boxes[..., :2] + offsets / self.num_points * boxes[..., 2:] * 0.5
        return self.output_proj(deformable_sample(value, shapes, locations, weights))
