"""Checking a model config before a model is built from it.

Configs come from files a user may not have written (a checkpoint's metadata, a transformers config.json), so
`build_model` checks them in three steps, each failing with one line that names the key:
  1. every section's keys and value types against its class's signature (`check_arguments`);
  2. every integer against the bounds of what it counts, by the constructor's annotation (`check_values`: Count,
     Queries, Index, ...; an unannotated integer is a width);
  3. the model built on the meta device, where nothing is allocated: its parameter count against a limit, and
     one forward pass of shapes only, which finds parts that do not fit together (`check_on_meta`).
"""

from __future__ import annotations

import inspect
import math
import types
import typing
import warnings
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from torch import nn

from .. import limits
from ..errors import ConfigError

# What a constructor or a forward pass raises on values of the right type but the wrong kind (zero heads,
# channel counts that do not chain, ...).
CONSTRUCTION_ERRORS = (TypeError, ValueError, RuntimeError, ZeroDivisionError, IndexError, KeyError, AssertionError,
                       OverflowError, NotImplementedError)  # fmt: skip


@dataclass(frozen=True)
class Bounds:
    """The values an integer argument of a model part may take from a config: `low` to `limit` (in absolute value
    when `signed`: a Python-style index, negative from the end)."""

    limit: limits.Limit = limits.MODEL_WIDTH
    low: int = 1
    signed: bool = False


# What the parts' constructors annotate their integer arguments with (an unannotated int is a width: channels).
Count = Annotated[int, Bounds(limits.MODEL_LAYERS)]  # layers, blocks, heads, points, groups
CountOrZero = Annotated[int, Bounds(limits.MODEL_LAYERS, low=0)]  # registers, frozen parts: may be none
Index = Annotated[int, Bounds(limits.MODEL_LAYERS, low=0)]  # of a block or stage, from 0
SignedIndex = Annotated[int, Bounds(limits.MODEL_LAYERS, signed=True)]  # of a layer, negative from the end
Queries = Annotated[int, Bounds(limits.MODEL_QUERIES)]
QueriesOrZero = Annotated[int, Bounds(limits.MODEL_QUERIES, low=0)]  # denoising queries: may be none
ImageSize = Annotated[int, Bounds(limits.IMAGE_SIZE)]


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


def _annotation(hint: Any, kind: type) -> Any:
    """The first `Annotated` metadata of type `kind` (a Bounds, or the class a nested mapping is the arguments of)
    anywhere in the annotation `hint` (`Count | list[Count]`, `list[Annotated[dict, HGStage]]`, ...); else None."""
    if typing.get_origin(hint) is Annotated:
        found = next((item for item in hint.__metadata__ if isinstance(item, kind)), None)
        if found is not None:
            return found
    for arg in typing.get_args(hint):
        found = _annotation(arg, kind)
        if found is not None:
            return found
    return None


def _admits_int(hint: Any) -> bool:
    """Whether the annotation `hint` takes integers (`int`, `int | None`, `list[int]`, unannotated); not `float`."""
    return hint is int or hint is Any or any(_admits_int(arg) for arg in typing.get_args(hint))


def check_values(cls: type, kwargs: dict[str, Any], where: str) -> None:
    """ConfigError for an integer below its bound, LimitError for one (or a list's length) above its limit, by the
    annotations of `cls`'s constructor (Count, Index, ...; see above), before anything is built from the values:
    a config of a few bytes must not ask for a million layers."""
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    for key, value in kwargs.items():
        _check_value(value, hints.get(key, int), where, key)


def _check_value(value: Any, hint: Any, where: str, key: str, in_list: bool = False) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        bounds = _annotation(hint, Bounds) or (Bounds() if _admits_int(hint) else None)
        if bounds is None:  # a float argument written as an integer (dropout: 0)
            return
        shown = f"{key} holds {value}," if in_list else f"{key}={value}"
        if not bounds.signed and value < bounds.low:
            raise ConfigError(f"{where}: {shown} must be at least {bounds.low}")
        bounds.limit.check(abs(value), f"{where}: {shown}")
    elif isinstance(value, (list, tuple)):
        limits.MODEL_LAYERS.check(len(value), f"{where}: {key} is a list of {len(value)}")
        for item in value:
            _check_value(item, hint, where, key, in_list=True)
    elif isinstance(value, dict):
        section = _annotation(hint, type)
        if section is not None:
            check_values(section, value, f"{where} {key}")
        else:
            for name, item in value.items():
                _check_value(item, Any, f"{where} {key}", name)


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
