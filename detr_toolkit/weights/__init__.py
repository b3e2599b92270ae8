"""Loading models from anything a user may hold: a config, our safetensors weights, or a foreign checkpoint.

Each foreign format is one module of key mapping (`ultralytics.py`, `huggingface.py`, `roboflow.py`,
`official_rtdetr.py`, `official_dfine.py`, `official_deimv2.py`); all return the same pair
(model config, state dict) so that `nn.build_model` stays the only place models are made.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import load_model_config
from ..errors import CheckpointError, DetrToolkitError
from . import huggingface, official_deimv2, official_dfine, official_rtdetr, roboflow, ultralytics
from .backbone import load_pretrained_backbone
from .hub import resolve_weights
from .native import is_ours, load_weights, read_safetensors, save_weights
from .safe_pickle import load_foreign_checkpoint

CONFIG_SUFFIXES = (".yaml", ".yml")
# Tensors the model computes from its config (a decoder's anchors for `eval_size`): a file's are taken (ultralytics'
# are rounded to fp16, and its inference uses them so), unless they hold NaN (our checkpoints of before 2026-12-04:
# the EMA averaged the inf of invalid positions into NaN), then the model keeps its own.
DERIVED_SUFFIXES = ("decoder.anchors", "decoder.valid_mask")
# Tensors a file may leave out: those, and batch norms' counters (they start from 0, as torch's loading does).
OPTIONAL_SUFFIXES = ("num_batches_tracked", *DERIVED_SUFFIXES)
# What a converter raises on a file of the right format whose contents are not what the format promises
# (a missing key, a string where a number belongs, a list too short): the file is malformed, not our code.
MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError, RecursionError)
# The pickled checkpoint formats, tried in this order: (what the file is, whether a checkpoint is one, its converter).
PICKLED_FORMATS = (
    ("ultralytics checkpoint", ultralytics.is_ultralytics_checkpoint, ultralytics.convert),
    ("rf-detr checkpoint", roboflow.is_rfdetr_checkpoint, roboflow.convert),
    ("RT-DETR checkpoint", lambda checkpoint: official_rtdetr.official_state(checkpoint) is not None,
     official_rtdetr.convert),
    ("D-FINE checkpoint", lambda checkpoint: official_dfine.official_state(checkpoint) is not None,
     official_dfine.convert),
    ("DEIMv2 checkpoint", lambda checkpoint: official_deimv2.official_state(checkpoint) is not None,
     official_deimv2.convert),
)  # fmt: skip


def load(source: str | Path | dict) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """-> (model config with `names`, state dict or None for a fresh model from a config)."""
    if isinstance(source, dict):
        return dict(source), None
    if str(source).endswith(CONFIG_SUFFIXES):
        return load_model_config(source), None
    if huggingface.is_hf_folder(Path(source)):
        with _malformed_is_named(source, "transformers model folder"):
            return huggingface.load_folder(Path(source))
    path = resolve_weights(source)
    if path.suffix == ".safetensors":
        with _malformed_is_named(path, "detr-toolkit weights file"):
            metadata, tensors = read_safetensors(path)
            if official_deimv2.official_state({"model": tensors}) is not None and not is_ours(metadata):
                with _malformed_is_named(path, "DEIMv2 checkpoint"):  # Intellindust/DEIMv2_* on the HuggingFace hub
                    return official_deimv2.convert({"model": tensors}, path)
            return load_weights(path, (metadata, tensors))
    checkpoint = load_foreign_checkpoint(path)
    for kind, recognises, convert in PICKLED_FORMATS:
        if recognises(checkpoint):
            with _malformed_is_named(path, kind):
                return convert(checkpoint, path)
    raise CheckpointError(
        f"{path}: not a checkpoint of a known format (ultralytics, rf-detr, official RT-DETR, D-FINE or DEIMv2, "
        "detr-toolkit)"
    )


@contextmanager
def _malformed_is_named(path: str | Path, kind: str) -> Iterator[None]:
    """A converter's error on a file whose contents are not what its format promises becomes one CheckpointError."""
    try:
        yield
    except DetrToolkitError as error:
        if str(path) in str(error):
            raise
        raise type(error)(f"{path}: {error}") from None
    except MALFORMED as error:
        detail = f"{type(error).__name__}: {error}".splitlines()[0]
        raise CheckpointError(f"{path}: a malformed {kind} ({detail})") from None


def load_state(model: nn.Module, state: dict[str, Any], source: str | Path) -> None:
    """Load `state` into `model` exactly: every tensor the model has, nothing else, shapes equal. Otherwise one
    CheckpointError naming the tensors that do not fit (a few of each kind, and how many)."""
    own = model.state_dict()
    state = {
        k: v
        for k, v in state.items()
        if not (k.endswith(DERIVED_SUFFIXES) and k in own and isinstance(v, torch.Tensor) and v.isnan().any())
    }
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    problems = []
    for kind, keys in (
        ("unexpected", sorted(k for k in state if k not in own)),
        ("missing", sorted(k for k in own if k not in state and not k.endswith(OPTIONAL_SUFFIXES))),
        ("not tensors", sorted(k for k in state if k in own and k not in tensors)),
        ("of other shapes", sorted(k for k in tensors if k in own and tensors[k].shape != own[k].shape)),
        (
            "of other kinds",
            sorted(
                f"{k} ({str(v.dtype).removeprefix('torch.')})"
                for k, v in tensors.items()
                if k in own and not _same_kind(v, own[k])
            ),
        ),
    ):
        if keys:
            shown = ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")
            problems.append(f"{kind}: {shown}")
    if problems:
        raise CheckpointError(f"{source}: the weights do not fit the model config ({'; '.join(problems)})")
    model.load_state_dict({**{k: v for k, v in own.items() if k.endswith(OPTIONAL_SUFFIXES)}, **state})


def transfer_state(model: nn.Module, state: dict[str, Any]) -> tuple[int, int]:
    """Copy into `model` every tensor of `state` whose name, shape and kind of number match one of the model's (a
    detector's weights into a segmentation model of the same architecture, say); -> (copied, the model's count)."""
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and k in own
               and v.shape == own[k].shape and _same_kind(v, own[k])}  # fmt: skip
    model.load_state_dict(fitting, strict=False)
    return len(fitting), len(own)


# Floating dtypes a weight is stored in and cast from without losing what it means; complex, float8 (a scaled format
# whose scale lives elsewhere) and integers are other kinds of number.
WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _same_kind(tensor: torch.Tensor, own: torch.Tensor) -> bool:
    """Whether `tensor` can be copied into the model's `own` tensor as the same kind of number (a counter such as
    `num_batches_tracked` may come as a float: ultralytics' half() casts it)."""
    if own.is_floating_point():
        return tensor.dtype in WEIGHT_DTYPES
    return not tensor.is_complex() and (tensor.dtype in WEIGHT_DTYPES or not tensor.is_floating_point())


__all__ = ["load", "load_pretrained_backbone", "load_state", "load_weights", "save_weights", "transfer_state"]
