"""Hungarian matching (Carion et al., DETR): each ground-truth object gets the one query that predicts it most
cheaply; the cost mixes a focal classification cost, the L1 distance of the boxes and their GIoU, and for a
segmentation model's last set the masks' binary cross-entropy and dice at random points (RF-DETR's matcher).

`union_of_matches` is D-FINE's GO-LSD / DEIM's dense one-to-one set: the matches of every decoder layer together.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou


class HungarianMatcher(nn.Module):
    """Shapes: boxes (..., B, Q, 4) cxcywh, logits (..., B, Q, C); targets: per image {"boxes": (n, 4) cxcywh,
    "labels": (n,)} -> per image (query indices, target indices), both (min(Q, n),) int64 on the CPU.

    Leading dimensions (e.g. decoder layers) are matched separately, in one cost computation: the result then
    holds one entry per (leading index, image), row-major.

    Costs that come out NaN or infinite (saturated scores in mixed precision) count as zero, so matching
    never fails on them.

    masks (B, Q', h, w), a segmentation model's mask logits of the last set's first Q' queries: with `mask_weight`
    or `dice_weight`, those queries' costs add the mask terms against the targets' "masks" (n, H, W) at
    `mask_points` random points.
    """

    def __init__(self, class_weight: float = 2.0, bbox_weight: float = 5.0, giou_weight: float = 2.0,
                 alpha: float = 0.25, gamma: float = 2.0, mask_weight: float = 0.0, dice_weight: float = 0.0,
                 mask_points: int = 3136):  # fmt: skip
        super().__init__()
        self.class_weight, self.bbox_weight, self.giou_weight = class_weight, bbox_weight, giou_weight
        self.alpha, self.gamma = alpha, gamma
        self.mask_weight, self.dice_weight, self.mask_points = mask_weight, dice_weight, mask_points

    @torch.no_grad()
    def forward(
        self, boxes: torch.Tensor, logits: torch.Tensor, targets: list[dict[str, torch.Tensor]],
        masks: torch.Tensor | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
        batch, queries, num_classes = logits.shape[-3:]
        sets = math.prod(logits.shape[:-3])  # sets of B images to match: the product of the leading dimensions
        probs = logits.detach().float().reshape(sets, batch, queries, num_classes).sigmoid()
        pred_boxes = boxes.detach().float().reshape(sets, batch, queries, 4)
        # Each image's queries against its own objects only: (sets, Q, n) per image.
        costs = [self.cost(probs[:, i].reshape(-1, num_classes), pred_boxes[:, i].reshape(-1, 4), target)
                 .view(sets, queries, -1) for i, target in enumerate(targets)]  # fmt: skip
        if masks is not None and (self.mask_weight or self.dice_weight):
            for cost, image_masks, target in zip(costs, masks, targets):
                cost[-1, : len(image_masks)] += self.mask_cost(image_masks, target["masks"]).nan_to_num(0.0, 0.0, 0.0)
        costs = [cost.cpu() for cost in costs]
        matches = []
        for index in range(sets):
            for cost in costs:
                rows, cols = linear_sum_assignment(cost[index].numpy())
                matches.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return matches

    def cost(self, probs: torch.Tensor, pred_boxes: torch.Tensor, target: dict[str, torch.Tensor]) -> torch.Tensor:
        """Matching cost of predictions (M, C) class probabilities, (M, 4) boxes against one image's objects
        -> (M, n)."""
        if not len(target["labels"]):
            return probs.new_zeros(len(probs), 0)
        p = probs[:, target["labels"]]  # (M, n)
        gt_boxes = target["boxes"].float()
        positive = self.alpha * (1 - p) ** self.gamma * -(p + 1e-8).log()
        negative = (1 - self.alpha) * p**self.gamma * -(1 - p + 1e-8).log()
        giou = generalized_box_iou(box_convert(pred_boxes, "cxcywh", "xyxy"), box_convert(gt_boxes, "cxcywh", "xyxy"))
        cost = (self.class_weight * (positive - negative) + self.bbox_weight * torch.cdist(pred_boxes, gt_boxes, p=1)
                + self.giou_weight * (1 - giou))  # fmt: skip
        return cost.nan_to_num(0.0, 0.0, 0.0)

    def mask_cost(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Mask logits (Q', h, w) against one image's object masks (n, H, W) -> (Q', n): `mask_weight` x the mean
        binary cross-entropy and `dice_weight` x the dice loss, at `mask_points` random points shared by all."""
        points = torch.rand(1, 1, self.mask_points, 2, device=logits.device) * 2 - 1  # grid_sample's x, y in -1..1
        predicted, truth = values_at(logits, points), pixels_at(masks.to(logits.device), points)  # (Q', P), (n, P)
        bce = (F.softplus(-predicted) @ truth.T + F.softplus(predicted) @ (1 - truth).T) / self.mask_points
        p = predicted.sigmoid()
        dice = 1 - (2 * p @ truth.T + 1) / (p.sum(1, keepdim=True) + truth.sum(1)[None] + 1)
        return self.mask_weight * bce + self.dice_weight * dice


Matches = list[tuple[torch.Tensor, torch.Tensor]]


def values_at(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Maps (N, h, w) at points (N or 1, 1, P, 2), x y in -1..1 over the map (grid_sample's, corners at +-1),
    bilinearly -> (N, P) float32."""
    return F.grid_sample(maps[:, None].float(), points.expand(len(maps), -1, -1, -1), align_corners=False)[:, 0, 0]


def pixels_at(masks: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Masks (N, H, W) of any dtype at points (1, 1, P, 2) as in `values_at`, the nearest pixel's value -> (N, P)
    float32: no float copy of whole masks (a crowded image's uint8 masks stay uint8 until sampled)."""
    height, width = masks.shape[-2:]
    x, y = ((points[0, 0] + 1) / 2 * points.new_tensor([width, height])).long().unbind(-1)  # (P,) pixel columns, rows
    return masks[:, y.clamp(0, height - 1), x.clamp(0, width - 1)].float()


def union_of_matches(matches: Matches, batch: int) -> Matches:
    """The union of several sets' matches, per image (D-FINE's GO-LSD, DEIM's dense one-to-one matching): every
    (query, object) pair some set matched, each query keeping the object most sets gave it.

    matches: per (set, image), set-major as `HungarianMatcher` returns them -> per image (queries, objects).
    Ties go as in the official criterion (the order of `torch.unique` and `torch.argsort` of the counts).
    """
    union = []
    for image in range(batch):
        pairs = torch.cat([torch.stack([q, g], 1) for q, g in matches[image::batch]])
        if not len(pairs):
            union.append((pairs[:, 0], pairs[:, 1]))
            continue
        unique, counts = torch.unique(pairs, return_counts=True, dim=0)
        ranked = unique[torch.argsort(counts, descending=True)]
        queries, first_of = torch.unique(ranked[:, 0], return_inverse=True)
        position = torch.arange(len(ranked))
        first = torch.full((len(queries),), len(ranked)).scatter_reduce(0, first_of, position, "amin")
        kept = ranked[first.sort().values]  # each query's best-ranked pair, in the order they rank
        union.append((kept[:, 0], kept[:, 1]))
    return union
