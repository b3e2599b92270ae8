"""Anchor boxes: one per pixel of every feature level, the starting point of two-stage query selection."""

from __future__ import annotations

import torch


def anchor_boxes(
    shapes: list[tuple[int, int]], base_size: float = 0.05, eps: float = 0.01, device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One anchor box per pixel of every level: its centre, with side `base_size * 2**level`.

    Returns boxes (1, S, 4) cxcywh in 0..1 and valid (1, S, 1), False for boxes within `eps` of the border;
    computed in `dtype` (the model's: a float64 model gets float64 anchors).
    """
    anchors = []
    for level, (h, w) in enumerate(shapes):
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=dtype, device=device),
            torch.arange(w, dtype=dtype, device=device),
            indexing="ij",
        )
        centres = torch.stack([(xs + 0.5) / w, (ys + 0.5) / h], dim=-1)
        sizes = torch.full_like(centres, base_size * 2.0**level)
        anchors.append(torch.cat([centres, sizes], dim=-1).view(1, h * w, 4))
    anchors = torch.cat(anchors, dim=1)
    return anchors, ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdim=True)


def generate_anchors(
    shapes: list[tuple[int, int]], base_size: float = 0.05, eps: float = 0.01, device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """`anchor_boxes` in logit space, as RT-DETR refines them: (1, S, 4) logits (inf where invalid), valid (1, S, 1)."""
    anchors, valid = anchor_boxes(shapes, base_size, eps, device, dtype)
    return torch.log(anchors / (1 - anchors)).masked_fill(~valid, float("inf")), valid


def level_shapes(image_size: int, strides: list[int] | tuple[int, ...]) -> list[tuple[int, int]]:
    """(h, w) of each feature level for a square input of `image_size` pixels (ceil division, as convs pad)."""
    return [(-(-image_size // s), -(-image_size // s)) for s in strides]
