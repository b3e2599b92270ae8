"""Checking a model config before a model is built from it.

Configs come from files a user may not have written (a checkpoint's metadata, a transformers config.json), so
`build_model` checks them in three steps, each failing with one line that names the key:
  1. every section's keys and value types against its class's signature (`check_arguments`);
  2. every number against a limit for what it counts (`check_config_values`: layers, widths, queries, ...);
  3. the model built on the meta device, where nothing is allocated: its parameter count against a limit, and
     one forward pass of shapes only, which finds parts that do not fit together (`check_on_meta`).
"""

from __future__ import annotations

import inspect
import math
import types
import typing
import warnings
from typing import Any

import torch
from torch import nn

from .. import limits
from ..errors import ConfigError

# What a constructor or a forward pass raises on values of the right type but the wrong kind (zero heads,
# channel counts that do not chain, ...).
CONSTRUCTION_ERRORS = (TypeError, ValueError, RuntimeError, ZeroDivisionError, IndexError, KeyError, AssertionError,
                       OverflowError, NotImplementedError)  # fmt: skip
# The limit each config value falls under, by its key; any other integer is a width (channels).
VALUE_LIMITS = {
    "nc": limits.MODEL_CLASSES, "imgsz": limits.IMAGE_SIZE, "eval_size": limits.IMAGE_SIZE,
    "num_queries": limits.MODEL_QUERIES, "num_denoising": limits.MODEL_QUERIES,
    **dict.fromkeys(("depth", "num_layers", "blocks", "layers_per_block", "csp_blocks", "num_groups", "num_heads",
                     "cross_heads", "num_points"), limits.MODEL_LAYERS),
}  # fmt: skip
# Integers of a model config count something (layers, channels, heads, points) and are at least 1, but for these:
SIGNED_KEYS = {"eval_idx"}  # Python-style indices, negative from the end
ZERO_OK_KEYS = {"num_registers", "num_denoising", "frozen_parts"}  # may be none
INDEX_LIST_KEYS = {"out_indices", "global_blocks", "return_stages", "return_blocks"}  # lists of indices, from 0


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fits(value: Any, hint: Any) -> bool:
    """Whether `value` is of the annotated type `hint` (the few kinds of annotation our constructors use)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return is_number(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_fits(item, args[0] if args else Any) for item in value)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return True


def _describe(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def check_arguments(cls: type, kwargs: dict[str, Any], where: str, derived: set[str] = frozenset()) -> None:
    """ConfigError for a key `cls` does not take, or a value not of its annotated type, or a negative integer."""
    accepted = set(inspect.signature(cls).parameters) - set(derived)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} (known: {sorted(accepted)})")
    hints = typing.get_type_hints(cls.__init__)
    for key, value in kwargs.items():
        if key in hints and not _fits(value, hints[key]):
            raise ConfigError(f"{where}: {key}={value!r} must be {_describe(hints[key])}")
        numbers = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and v < 0 for v in numbers):
            raise ConfigError(f"{where}: {key}={value!r} must not be negative")


def _check_integer(value: int, key: str, where: str, in_list: bool = False) -> None:
    """An integer of a model config against its lower bound (see the key sets above) and its limit."""
    low = 0 if (in_list and key in INDEX_LIST_KEYS) or key in ZERO_OK_KEYS else 1
    if key not in SIGNED_KEYS and value < low:
        raise ConfigError(f"{where}: {value} must be at least {low}")
    VALUE_LIMITS.get(key, limits.MODEL_WIDTH).check(abs(value), f"{where}={value}" if not in_list else where)


def check_config_values(node: Any, where: str = "model config", key: str = "") -> None:
    """ConfigError for a count below 1 (or an index below 0), LimitError for a value (or list length) above its
    limit, before anything is built from it: a config of a few bytes must not ask for a million layers."""
    if isinstance(node, dict):
        for name, value in node.items():
            if isinstance(value, int) and not isinstance(value, bool):
                _check_integer(value, name, f"{where} {name}")
            else:
                check_config_values(value, f"{where} {name}", name)
    elif isinstance(node, list):
        limits.MODEL_LAYERS.check(len(node), f"{where}: a list of {len(node)}")
        for item in node:
            if isinstance(item, int) and not isinstance(item, bool):
                _check_integer(item, key, f"{where}: value {item}", in_list=True)
            else:
                check_config_values(item, where, key)


def check_on_meta(model: nn.Module, imgsz: Any) -> None:
    """For a model built on the meta device: its parameter count against the limit, and one forward pass of a
    (1, 3, imgsz, imgsz) image of shapes only; ConfigError when the parts do not fit together."""
    limits.MODEL_PARAMETERS.check(sum(p.numel() for p in model.parameters()), "model config")
    stride = getattr(model, "stride", 1)
    if not isinstance(stride, int) or stride < 1:
        raise ConfigError(f"model config: the backbone's stride {stride!r} is not a positive integer")
    if not isinstance(imgsz, int) or isinstance(imgsz, bool) or imgsz < 1 or imgsz % stride:
        raise ConfigError(f"model config imgsz={imgsz!r}: must be a positive multiple of the model's stride {stride}")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what does not fit is reported once, below, not as a warning too
            model.eval()(torch.zeros(1, 3, imgsz, imgsz, device="meta"))
    except CONSTRUCTION_ERRORS as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"model config: its parts do not fit together ({detail})") from None
