"""Loading models from anything a user may hold: a config, our safetensors weights, or a foreign checkpoint.

Each foreign format is one module of key mapping (`ultralytics.py`, `huggingface.py`, `roboflow.py`); all return the same pair
(model config, state dict) so that `nn.build_model` stays the only place models are made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import load_model_config
from ..errors import CheckpointError
from . import huggingface, roboflow, ultralytics
from .hub import resolve_weights
from .native import load_weights, save_weights
from .safe_pickle import load_foreign_checkpoint

CONFIG_SUFFIXES = (".yaml", ".yml")


def load(source: str | Path | dict) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """-> (model config with `names`, state dict or None for a fresh model from a config)."""
    if isinstance(source, dict):
        return dict(source), None
    if str(source).endswith(CONFIG_SUFFIXES):
        return load_model_config(source), None
    if huggingface.is_hf_folder(Path(source)):
        return huggingface.load_folder(Path(source))
    path = resolve_weights(source)
    if path.suffix == ".safetensors":
        return load_weights(path)
    checkpoint = load_foreign_checkpoint(path)
    if ultralytics.is_ultralytics_checkpoint(checkpoint):
        return ultralytics.convert(checkpoint, path)
    if roboflow.is_rfdetr_checkpoint(checkpoint):
        return roboflow.convert(checkpoint, path)
    raise CheckpointError(f"{path}: not an RT-DETR checkpoint of a known format (ultralytics, rf-detr, detr-toolkit)")


__all__ = ["load", "load_weights", "save_weights"]
