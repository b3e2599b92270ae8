"""D-FINE's fine-grained distribution refinement (Peng et al., 2024, "D-FINE: Redefine Regression Task in DETRs as
Fine-grained Distribution Refinement"): a box is four edge distances from a reference box, each the expectation of
a distribution over `reg_max + 1` bins whose values W(n) are spaced finely near zero and coarsely far from it.
The location-quality estimator turns the sharpness of those distributions into a score correction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common import MLP


def weighting_function(reg_max: int, up: float, reg_scale: float) -> torch.Tensor:
    """The bin values W(n), n = 0..reg_max: 0 in the middle, +-up * reg_scale one bin from the ends, twice that at
    the ends, geometric in between. Shape (reg_max + 1,), float64 (as transformers computes them)."""
    up_, scale = torch.tensor([abs(up)], dtype=torch.float64), abs(reg_scale)
    bound = up_ * scale
    step = (bound + 1) ** (2 / (reg_max - 2))
    left = [-(step**i) + 1 for i in range(reg_max // 2 - 1, 0, -1)]
    right = [step**i - 1 for i in range(1, reg_max // 2)]
    return torch.cat([-2 * bound, *left, torch.zeros(1, dtype=torch.float64), *right, 2 * bound])


def expected_distances(corners: torch.Tensor, bin_values: torch.Tensor) -> torch.Tensor:
    """Shapes: corners (B, Q, 4 * (R + 1)) logits, bin_values (R + 1,) -> (B, Q, 4) expected edge distances."""
    probabilities = F.softmax(corners.unflatten(-1, (4, -1)), dim=-1)
    return probabilities @ bin_values.to(probabilities.dtype)


def distances_to_boxes(reference: torch.Tensor, distances: torch.Tensor, reg_scale: float) -> torch.Tensor:
    """Shapes: reference (B, Q, 4) cxcywh, distances (B, Q, 4) left, top, right, bottom -> (B, Q, 4) cxcywh.

    An edge sits (reg_scale / 2 + d) * side / reg_scale from the reference's centre: d = 0 gives the reference box.
    """
    centre, size = reference[..., :2], reference[..., 2:] / abs(reg_scale)
    half = 0.5 * abs(reg_scale)
    top_left = centre - (half + distances[..., :2]) * size
    bottom_right = centre + (half + distances[..., 2:]) * size
    return torch.cat([(top_left + bottom_right) / 2, bottom_right - top_left], dim=-1)


class LocationQuality(nn.Module):
    """D-FINE's LQE: the top-k probabilities of each edge's distribution and their mean -> an MLP -> a score added
    to every class logit. Shapes: logits (B, Q, C), corners (B, Q, 4 * (R + 1)) -> (B, Q, C)."""

    def __init__(self, top_k: int = 4, hidden_dim: int = 64, num_layers: int = 2, act: str = "relu"):
        super().__init__()
        self.top_k = top_k
        self.reg_conf = MLP(4 * (top_k + 1), hidden_dim, 1, num_layers, act)

    def forward(self, logits: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
        probabilities = F.softmax(corners.unflatten(-1, (4, -1)), dim=-1)
        top = probabilities.topk(self.top_k, dim=-1).values
        statistics = torch.cat([top, top.mean(-1, keepdim=True)], dim=-1).flatten(-2)
        return logits + self.reg_conf(statistics)
