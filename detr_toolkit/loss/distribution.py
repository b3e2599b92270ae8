"""D-FINE's losses on edge distributions (Peng et al., 2024; see `nn.decoders.distribution` for the distributions):

    FGL, fine-grained localization: each matched query's four edge distributions are pulled toward the two bins
        on either side of its object's true edge distance, in proportion to how close each bin is (distribution
        focal loss on D-FINE's unevenly spaced bins), weighted by the IoU of the query's box with its object
    DDF, decoupled distillation focal (GO-LSD): every layer but the last learns the last layer's distributions
        (KL divergence at temperature T); matched queries weigh by their IoU, the others by the teacher's best
        class score, and the two groups' means are balanced by the square roots of their sizes

Both follow D-FINE's official criterion (and transformers' `DFineLoss.loss_local`, which computes the same terms).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..distributed import mean_over_ranks


def edge_distances(reference: torch.Tensor, boxes_xyxy: torch.Tensor, reg_scale: float) -> torch.Tensor:
    """The edge distances that would move each reference box onto its object: the inverse of
    `nn.decoders.distribution.distances_to_boxes`. Shapes: (M, 4) cxcywh, (M, 4) xyxy -> (M, 4) left, top, right,
    bottom."""
    reg_scale = abs(reg_scale)
    size = reference[:, 2:] / reg_scale + 1e-16
    centre = reference[:, :2]
    near = (centre - boxes_xyxy[:, :2]) / size - 0.5 * reg_scale
    far = (boxes_xyxy[:, 2:] - centre) / size - 0.5 * reg_scale
    return torch.cat([near, far], dim=-1)


def bin_targets(distances: torch.Tensor, bin_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split each distance between the bins on either side of it. Shapes: (...) distances, (R + 1,) bin values ->
    left bin index (...) int64, weight of the right bin (...), weight of the left bin (...).

    A distance below the first bin goes wholly to bin 0, one beyond the last wholly to bin R.
    """
    reg_max = len(bin_values) - 1
    left = (bin_values <= distances[..., None]).sum(-1) - 1
    inside = (left >= 0) & (left < reg_max)
    index = left.clamp(0, reg_max - 1)
    below, above = bin_values[index], bin_values[index + 1]
    to_left, to_right = (distances - below).abs(), (above - distances).abs()
    weight_right = torch.where(inside, to_left / (to_left + to_right), (left >= reg_max).to(distances.dtype))
    return index, weight_right, 1 - weight_right


def localization_loss(corners: torch.Tensor, targets: tuple[torch.Tensor, ...], ious: torch.Tensor) -> torch.Tensor:
    """FGL of matched queries. Shapes: corners (M, 4, R + 1) logits, targets from `bin_targets` (M, 4) each,
    ious (M,) -> (M,) summed over the four edges."""
    index, weight_right, weight_left = targets
    logits = corners.flatten(0, 1)
    loss = (F.cross_entropy(logits, index.flatten(), reduction="none") * weight_left.flatten()
            + F.cross_entropy(logits, index.flatten() + 1, reduction="none") * weight_right.flatten())  # fmt: skip
    return (loss.view(-1, 4) * ious[:, None]).sum(-1)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor, matched: torch.Tensor,
                      temperature: float) -> torch.Tensor:  # fmt: skip
    """DDF of L student layers against one teacher. Shapes: student (L, B, Q, 4, R + 1), teacher (B, Q, 4, R + 1)
    corner logits, weights and matched (L, B, Q) -> (L,).

    weights: per query, the IoU with its object for matched queries, the teacher's best score for the others.
    """
    kl = F.kl_div(F.log_softmax(student / temperature, -1), F.softmax(teacher.detach() / temperature, -1),
                  reduction="none").sum(-1) * temperature**2  # fmt: skip
    loss = kl * weights.detach()[..., None]  # (L, B, Q, 4)
    edges = matched[..., None].expand_as(loss)
    # edge counts of the global batch (averaged over the DDP ranks: see `distributed`)
    positives, negatives = mean_over_ranks(torch.stack([edges.sum((1, 2, 3)), (~edges).sum((1, 2, 3))]).float())
    mean_positive = torch.where(edges, loss, 0).sum((1, 2, 3)) / positives.clamp(min=1)
    mean_negative = torch.where(edges, 0, loss).sum((1, 2, 3)) / negatives.clamp(min=1)
    root_positive, root_negative = positives.to(loss.dtype).sqrt(), negatives.to(loss.dtype).sqrt()
    return (mean_positive * root_positive + mean_negative * root_negative) / (root_positive + root_negative)
