"""Multi-scale deformable attention (Zhu et al., Deformable DETR), in plain PyTorch, with RT-DETRv2's options.

Each query looks at a few sampled locations per head and per feature level, placed around its reference box,
and mixes them with softmax weights predicted from the query itself. RT-DETRv2 (Lv et al., 2024) adds a point
count per level, a scale for the offsets, and "discrete" sampling: the nearest pixel by index arithmetic instead
of bilinear `grid_sample`, for runtimes that cannot run GridSample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SAMPLING = ("bilinear", "discrete")


def _discrete_sample(level: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    """The pixel each location falls in (RT-DETRv2's rounding: floor(x * w + 0.5), clamped to the map).

    Shapes: level (N, C, h, w), locations (N, P, Q, 2) x/y in 0..1 -> (N, C, P, Q).
    """
    h, w = level.shape[2:]
    pixel = (locations * torch.tensor([w, h], dtype=locations.dtype, device=locations.device) + 0.5).to(torch.int64)
    x, y = pixel[..., 0].clamp(0, w - 1), pixel[..., 1].clamp(0, h - 1)
    index = (y * w + x).flatten(1)  # (N, P * Q)
    sampled = level.flatten(2).gather(2, index[:, None].expand(-1, level.shape[1], -1))
    return sampled.unflatten(2, locations.shape[1:3])


def deformable_sample(
    value: torch.Tensor,
    shapes: list[tuple[int, int]],
    locations: torch.Tensor,
    weights: torch.Tensor,
    points: list[int],
    sampling: str = "bilinear",
) -> torch.Tensor:
    """Sample `value` at `locations` and take the weighted sum over levels and points.

    Args:
        value: (B, S, heads, head_dim), the flattened levels of `shapes` one after another (S = sum h*w).
        shapes: [(h, w)] per level.
        locations: (B, Q, heads, P, 2), x/y in 0..1 of each level's map; P = sum(points), level by level.
        weights: (B, Q, heads, P), summing to 1 over the last axis.
        points: sampling points per level.
        sampling: "bilinear" (zeros outside the map) or "discrete" (nearest pixel, see `_discrete_sample`).

    Returns:
        (B, Q, heads * head_dim).
    """
    heads, head_dim = value.shape[2:]
    queries = locations.shape[1]
    # Per level, contiguous grids with the points before the queries, (B * heads, P_l, Q, 2): the samples come out
    # as (B * heads, head_dim, P_l, Q), so weighting and summing over points run along whole rows of queries.
    # (grid_sample on strided grids, or a weighted sum over a short last axis, is several times slower.)
    locations = locations.permute(0, 2, 3, 1, 4).flatten(0, 1)  # (B * heads, P, Q, 2)
    weights = weights.permute(0, 2, 3, 1).flatten(0, 1)[:, None]  # (B * heads, 1, P, Q)
    levels = value.split([h * w for h, w in shapes], dim=1)
    out = 0
    for level, grid, level_weights, (h, w) in zip(levels, locations.split(points, 1), weights.split(points, 2), shapes):
        level = level.permute(0, 2, 3, 1).flatten(0, 1).unflatten(-1, (h, w))  # (B * heads, head_dim, h, w)
        grid = grid.contiguous()
        if sampling == "discrete":
            sampled = _discrete_sample(level, grid)
        else:
            sampled = F.grid_sample(level, 2 * grid - 1, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out + (sampled * level_weights).sum(2)  # (B * heads, head_dim, Q)
    return out.view(-1, heads * head_dim, queries).transpose(1, 2)


class MSDeformableAttention(nn.Module):
    """Shapes: query (B, Q, D), reference boxes (B, Q, 4) cxcywh in 0..1, value (B, S, D) -> (B, Q, D).

    `num_points`: per head, for every level (an int) or per level (a list, RT-DETRv2). A point's offset is in
    units of the reference box's size times `offset_scale`, divided by its level's point count.
    `project_values=False`: the tokens are sampled as they are and the result is not projected (D-FINE).
    """

    def __init__(
        self,
        dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int | list[int] = 4,
        offset_scale: float = 0.5,
        sampling: str = "bilinear",
        project_values: bool = True,
    ):
        super().__init__()
        points = [num_points] * num_levels if isinstance(num_points, int) else list(num_points)
        if len(points) != num_levels:
            raise ValueError(f"num_points {points} must give one count per feature level ({num_levels})")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling={sampling!r}: use one of {SAMPLING}")
        self.num_heads, self.points, self.offset_scale, self.sampling = num_heads, points, offset_scale, sampling
        total = sum(points)
        self.sampling_offsets = nn.Linear(dim, num_heads * total * 2)
        self.attention_weights = nn.Linear(dim, num_heads * total)
        self.value_proj = nn.Linear(dim, dim) if project_values else nn.Identity()
        self.output_proj = nn.Linear(dim, dim) if project_values else nn.Identity()
        per_point = torch.cat([torch.full((n,), 1.0 / n) for n in points])
        self.register_buffer("point_scale", per_point[:, None] * offset_scale, persistent=False)  # (P, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's init: offsets start on rays around the reference, one direction per head, the k-th
        point of a level k steps out."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True).values).view(self.num_heads, 1, 2)
        steps = torch.cat([torch.arange(1, n + 1, dtype=torch.float32) for n in self.points])
        with torch.no_grad():
            self.sampling_offsets.bias.copy_((grid * steps.view(1, -1, 1)).flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for projection in (self.value_proj, self.output_proj):
            if isinstance(projection, nn.Linear):
                nn.init.xavier_uniform_(projection.weight)
                nn.init.zeros_(projection.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_boxes: torch.Tensor,
        value: torch.Tensor,
        shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        queries = query.shape[1]
        value = self.value_proj(value).unflatten(-1, (self.num_heads, -1))
        total = len(self.point_scale)
        offsets = self.sampling_offsets(query).view(-1, queries, self.num_heads, total, 2)
        weights = self.attention_weights(query).view(-1, queries, self.num_heads, total).softmax(-1)
        boxes = reference_boxes[:, :, None, None, :]
        locations = boxes[..., :2] + offsets * self.point_scale.to(offsets.dtype) * boxes[..., 2:]
        return self.output_proj(deformable_sample(value, shapes, locations, weights, self.points, self.sampling))
