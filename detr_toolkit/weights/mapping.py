"""Helpers shared by the checkpoint importers: rename keys by regex rules, unpack packed attention, find the weights
in an official solver's checkpoint, and the shipped config a config-less checkpoint's shapes fit."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import class_names, load_model_config
from ..errors import CheckpointError
from ..nn import build_model

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


UNCOUNTED = ("num_batches_tracked", "decoder.anchors", "decoder.valid_mask")  # what a model computes or counts itself


def tensor_shapes(config: dict[str, Any]) -> dict[str, torch.Size]:
    """The shapes of a config's model's tensors (built on the meta device), less those it computes itself."""
    with torch.device("meta"):
        model = build_model({k: v for k, v in config.items() if k != "names"})
    return {k: v.shape for k, v in model.state_dict().items() if not k.endswith(UNCOUNTED)}


def shipped_size(
    family: str, sizes: Sequence[str], state: dict[str, torch.Tensor], path: str | Path, decoder: dict[str, Any],
    fit: Callable[[dict[str, Any], dict[str, torch.Tensor]], dict[str, torch.Tensor]] = lambda config, state: state,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:  # fmt: skip
    """For an official checkpoint without a config: the first shipped config of `sizes` whose model has exactly the
    tensors of `state` (as `fit` arranges them for that config), with the file's class count and its `decoder`
    settings -> (config, state). CheckpointError naming the tensors in which the closest size differs otherwise."""
    nc = state["decoder.dec_score_head.0.weight"].shape[0]
    closest: tuple[int, str, list[str]] | None = None
    for size in sizes:
        config = copy.deepcopy(load_model_config(size))
        config["decoder"].update(decoder)
        if nc != config["nc"]:  # fine-tuned to other classes, which the file does not name
            config["nc"], config["names"] = nc, class_names(None, nc, str(path))
        fitted = fit(config, state)
        wanted, have = tensor_shapes(config), {k: v.shape for k, v in fitted.items() if not k.endswith(UNCOUNTED)}
        if wanted == have:
            return config, fitted
        differences = ([f"missing {k}" for k in wanted if k not in have]
                       + [f"unexpected {k}" for k in have if k not in wanted]
                       + [f"{k} is {list(have[k])}, not {list(wanted[k])}" for k in wanted
                          if k in have and have[k] != wanted[k]])  # fmt: skip
        if closest is None or len(differences) < closest[0]:
            closest = (len(differences), size, differences)
    count, size, differences = closest
    raise CheckpointError(
        f"{path}: an official {family} checkpoint of a size no shipped config has ({', '.join(sizes)}); closest "
        f"{size}, {count} tensor(s) differ: {'; '.join(differences[:3])}"
    )
