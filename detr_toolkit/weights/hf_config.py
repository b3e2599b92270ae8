"""Reading a transformers `config.json` and `preprocessor_config.json` into our model config's terms: checked
counts, class names, and the input settings (size, rescale, normalisation) every family shares."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .. import limits
from ..config import class_names
from ..errors import CheckpointError

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
PIXEL_MAX = 255.0  # our models see RGB in 0..1: 8-bit pixels / 255


def block_count(value: Any, name: str, most: int | None = None) -> int:
    """A block count or index of the config: an integer, at most `most` (or the layer limit). Checked before
    anything is sized from it: a config of a few bytes must not make a list of ten billion indices."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"config.json {name}: {value!r} is not a count or index of blocks")
    if most is not None and value > most:
        raise ValueError(f"config.json {name}: {value} is beyond the {most} blocks")
    limits.MODEL_LAYERS.check(value, f"config.json {name}={value}")
    return value


def require(hf: dict[str, Any], name: str, supported: Any) -> None:
    """CheckpointError when the config sets `name` to anything but the `supported` value (its default if absent)."""
    value = hf.get(name, supported)
    if value != supported:
        raise CheckpointError(f"config.json {name}={value!r} is not supported (only {supported!r})")


def names_of(hf: dict[str, Any], default_nc: int) -> tuple[int, dict[int, str]]:
    """(nc, {index: name}) from `id2label` (or `num_labels`, or the family's default count without either)."""
    id2label = hf.get("id2label") or {}
    nc = len(id2label) if isinstance(id2label, dict) and id2label else hf.get("num_labels", default_nc)
    return nc, class_names(id2label, nc, "config.json")


def input_settings(
    preprocessor: dict[str, Any] | None, default_size: int, default_mean: list[float] | None,
    default_std: list[float] | None,
) -> tuple[int, list[float] | None, list[float] | None]:  # fmt: skip
    """(imgsz, mean, std) of our config from an image processor's settings.

    The processor computes (pixels * rescale_factor - image_mean) / image_std (each step when enabled); our models
    take pixels / 255, normalised by (x - mean) / std. So mean = image_mean / (255 r), std = image_std / (255 r);
    None for both when the two agree already (no normalisation and r = 1/255). Without a processor: the defaults.
    """
    if preprocessor is None:
        return default_size, default_mean, default_std
    size = preprocessor.get("size") or {}
    imgsz = size.get("height") or size.get("shortest_edge") or default_size
    if size.get("width", imgsz) != imgsz:
        raise CheckpointError(f"preprocessor_config.json: size {size} is not square; our models take square inputs")
    scale = PIXEL_MAX * (
        preprocessor.get("rescale_factor", 1 / PIXEL_MAX) if preprocessor.get("do_rescale", True) else 1
    )
    scale = 1.0 if math.isclose(scale, 1.0) else scale  # 255 * (1 / 255) as JSON stores it
    if preprocessor.get("do_normalize", True):
        mean = preprocessor.get("image_mean", default_mean or [0.0] * 3)
        std = preprocessor.get("image_std", default_std or [1.0] * 3)
    else:
        mean, std = [0.0] * 3, [1.0] * 3
    mean, std = [m / scale for m in mean], [s / scale for s in std]
    if mean == [0.0] * 3 and std == [1.0] * 3:
        return imgsz, None, None
    return imgsz, mean, std


def rename_tensors(
    tensors: dict[str, torch.Tensor], rename: Callable[[str], str | None], where: str, nc: int
) -> dict[str, torch.Tensor]:
    """An RT-DETR-family model's tensors under our names: `rename` gives a key's new name, None to drop it, or
    raises KeyError for a key it does not know (a CheckpointError naming `where`). The denoising class embedding
    loses the padding-class row transformers adds after the `nc` real ones."""
    state: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        try:
            new = rename(key)
        except KeyError:
            raise CheckpointError(f"{where}: unexpected tensor {key!r}") from None
        if new is not None:
            state[new] = tensor
    embed = state.get("decoder.denoising_class_embed.weight")
    if embed is not None:
        state["decoder.denoising_class_embed.weight"] = embed[:nc]
    return state
