"""Contrastive denoising queries (DN-DETR / DINO, as RT-DETR trains): noised copies of the ground-truth objects
are fed to the decoder beside the ordinary queries and must be reconstructed, which steadies matching.

Each of `groups` groups holds 2 * m slots (m = most objects in an image, at most num_denoising / 2): m positive
queries (boxes jittered within half their size, labels sometimes flipped) and m negative ones (jittered by
more than that; they must be classified as background). An attention mask keeps the groups and the
ordinary queries from seeing each other's answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_convert

from ...distributed import max_over_ranks
from ..common import inverse_sigmoid


@dataclass
class DenoisingQueries:
    """queries (B, D, dim) label embeddings; reference (B, D, 4) box logits; attn_mask (D + Q, D + Q), True = blocked;
    positive / target: per image, the positive query slots (P,) and the object index each reconstructs (P,)."""

    queries: torch.Tensor
    reference: torch.Tensor
    attn_mask: torch.Tensor
    positive: list[torch.Tensor]
    target: list[torch.Tensor]


def denoising_queries(
    targets: list[dict[str, torch.Tensor]],
    class_embed: torch.Tensor,
    num_queries: int,
    num_denoising: int = 100,
    label_noise_ratio: float = 0.5,
    box_noise_scale: float = 1.0,
) -> DenoisingQueries | None:
    """Build the denoising queries for a batch; None when there are no objects (or num_denoising is 0).

    targets: per image {"boxes": (n, 4) cxcywh in 0..1, "labels": (n,)}; class_embed: (num_classes, dim).
    """
    counts = [len(t["labels"]) for t in targets]
    device = class_embed.device
    # the most in any image of the global batch: every DDP rank makes as many groups (see `distributed`)
    most = min(max_over_ranks(max(counts, default=0), device), num_denoising)
    if num_denoising <= 0 or most == 0:
        return None
    groups = num_denoising // most
    kept = [torch.randperm(n, device=device)[:most].sort().values if n > most else torch.arange(n, device=device)
            for n in counts]  # fmt: skip
    batch, slots = len(targets), 2 * most * groups
    labels = torch.zeros(batch, 2 * groups, most, dtype=torch.int64, device=device)
    boxes = torch.zeros(batch, 2 * groups, most, 4, device=device)
    filled = torch.zeros(batch, 2 * groups, most, dtype=torch.bool, device=device)
    for image, (target, index) in enumerate(zip(targets, kept)):
        labels[image, :, : len(index)] = target["labels"][index].to(device)
        boxes[image, :, : len(index)] = target["boxes"][index].to(device)
        filled[image, :, : len(index)] = True
    # Label noise: a fraction of the labels replaced by random classes.
    flip = torch.rand(labels.shape, device=device) < label_noise_ratio * 0.5
    labels = torch.where(flip, torch.randint_like(labels, class_embed.shape[0]), labels)
    # Box noise: corners move by up to half the box size (positives) or between 1x and 2x that (negatives).
    if box_noise_scale > 0:
        xyxy = box_convert(boxes, "cxcywh", "xyxy")
        half_size = (boxes[..., 2:] * 0.5).repeat(1, 1, 1, 2) * box_noise_scale
        magnitude = torch.rand_like(boxes)
        magnitude[:, 1::2] += 1.0  # odd halves of each group are the negatives
        sign = torch.randint_like(boxes, 0, 2) * 2.0 - 1.0
        boxes = box_convert((xyxy + magnitude * sign * half_size).clamp(0, 1), "xyxy", "cxcywh")
    queries = class_embed[labels] * filled[..., None]
    reference = inverse_sigmoid(boxes, eps=1e-6) * filled[..., None]
    group_of = torch.arange(slots, device=device) // (2 * most)
    attn_mask = torch.zeros(slots + num_queries, slots + num_queries, dtype=torch.bool, device=device)
    attn_mask[:slots, :slots] = group_of[:, None] != group_of[None, :]
    attn_mask[slots:, :slots] = True
    positive = [(torch.arange(len(index))[None] + torch.arange(groups)[:, None] * 2 * most).flatten() for index in kept]
    target = [index.cpu().repeat(groups) for index in kept]
    return DenoisingQueries(queries.flatten(1, 2), reference.flatten(1, 2), attn_mask, positive, target)
