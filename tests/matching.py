"""Comparing detection sets whose order may differ where scores tie within float noise."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def max_row_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Largest difference between two (N, D) row sets, rows paired one-to-one by least difference."""
    cost = (ours[:, None] - theirs[None]).abs().amax(-1).numpy()
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].max(initial=0))


def match_detections(ours: np.ndarray, theirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair rows of two (N, 6) detection arrays: same class, nearest box; returns both in paired order."""
    cost = np.abs(ours[:, None, :4] - theirs[None, :, :4]).max(-1) + 1e6 * (ours[:, None, 5] != theirs[None, :, 5])
    rows, cols = linear_sum_assignment(cost)
    return ours[rows], theirs[cols]
