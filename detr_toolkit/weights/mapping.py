"""Helpers shared by the checkpoint importers: rename keys by regex rules, unpack packed attention, find the weights
in an official solver's checkpoint."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

Rule = tuple[str, str | Callable[[re.Match], str]]


def apply_rules(key: str, rules: Sequence[Rule]) -> str:
    """Apply every (pattern, replacement) rule in order with `re.sub`."""
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def unpack_in_proj(key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """`x.in_proj_weight` / `x.in_proj_bias` of `nn.MultiheadAttention` (q, k, v stacked) -> our q/k/v_proj keys;
    any other key is returned as it is."""
    name, _, suffix = key.rpartition(".")
    if suffix not in ("in_proj_weight", "in_proj_bias"):
        return {key: tensor}
    kind = suffix.removeprefix("in_proj_")
    return {f"{name}.{proj}_proj.{kind}": part for proj, part in zip("qkv", tensor.chunk(3))}


def solver_state(checkpoint: Any) -> dict | None:
    """The weights in a checkpoint of the RT-DETR family's official solvers (lyuwenyu/RT-DETR, D-FINE, DEIM): the
    EMA's (`{"ema": {"module": ...}}`) when there is one, as their tools take, else `{"model": ...}`; None when
    neither is a mapping."""
    if not isinstance(checkpoint, dict):
        return None
    ema = checkpoint.get("ema")
    state = ema.get("module") if isinstance(ema, dict) else checkpoint.get("model")
    return state if isinstance(state, dict) else None
