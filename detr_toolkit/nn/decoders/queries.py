"""Two-stage query selection: every encoder token is scored as a proposal; the best `k` become queries."""

from __future__ import annotations

import torch


def top_k_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Tokens with the best class score. Shapes: scores (B, S, C) -> indices (B, min(k, S))."""
    return scores.max(-1).values.topk(min(k, scores.shape[1]), dim=1).indices


def gather_tokens(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Rows of `values` at `indices`. Shapes: values (B, S, D), indices (B, K) -> (B, K, D)."""
    return values.gather(1, indices[..., None].expand(-1, -1, values.shape[-1]))
