"""What the training losses share across DDP ranks, so that the ranks' shares of a global batch compute what one
process computes on the whole batch (DDP then averages the ranks' gradients). In one process: the values as given.

A loss divided by a count (matched objects, DDF's matched and unmatched edges) is divided by that count summed
over the ranks and divided by their number: each rank's share of the numerator over the mean count, averaged by
DDP, is the global numerator over the global count (as the official DETR criteria divide by `num_boxes`). Every
rank calls these in the same order, whatever its images hold.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """The number of processes in the default group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """`value` (no gradient) summed over the ranks and divided by their number."""
    world = world_size()
    if world == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world


def max_over_ranks(value: int, device: torch.device) -> int:
    """The largest of the ranks' `value`s."""
    if world_size() == 1:
        return value
    largest = torch.tensor([value], device=device)
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return int(largest.item())
