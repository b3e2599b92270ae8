"""Import of models saved by HuggingFace transformers (`save_pretrained` folders).

A folder holds `config.json`, optionally `preprocessor_config.json`, and `model.safetensors` (or shards listed in
`model.safetensors.index.json`); all are plain data, so nothing in them can run code. transformers itself is not
needed. Each family's module turns the config into ours and renames the tensors to our modules:
`hf_lwdetr` (RF-DETR, LW-DETR), `hf_rtdetr` (RT-DETR, RT-DETRv2), `hf_dfine` (D-FINE), `hf_deimv2` (DEIMv2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import CheckpointError
from . import hf_deimv2, hf_dfine, hf_lwdetr, hf_rtdetr

FAMILIES = {"rf_detr": hf_lwdetr, "lw_detr": hf_lwdetr, "rt_detr": hf_rtdetr, "rt_detr_v2": hf_rtdetr,
            "d_fine": hf_dfine, "deimv2": hf_deimv2}  # fmt: skip


def is_hf_folder(path: Path) -> bool:
    """True for a directory holding a transformers config.json (its model type is checked on loading)."""
    return path.is_dir() and (path / "config.json").is_file()


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: cannot read ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a mapping of {what}")
    return data


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    index = folder / "model.safetensors.index.json"
    files = (
        sorted(set(read_json(index, "weight files")["weight_map"].values()))
        if index.is_file()
        else ["model.safetensors"]
    )
    state: dict[str, torch.Tensor] = {}
    for name in files:
        if not isinstance(name, str) or Path(name).name != name or not (folder / name).is_file():
            # a missing file, one outside the folder, a folder, or a FIFO that would block the read
            raise CheckpointError(f"{folder}: the weights file {name!r} is not a file in the folder")
        try:
            state.update(load_file(folder / name))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{folder / name}: cannot read the weights ({error})") from None
    return state


def load_folder(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A `save_pretrained` folder -> (our model config with names, our state dict)."""
    hf = read_json(folder / "config.json", "model settings")
    family = FAMILIES.get(hf.get("model_type"))
    if family is None:
        raise CheckpointError(
            f"{folder}: a transformers model of type {hf.get('model_type')!r}; supported: {', '.join(FAMILIES)}"
        )
    preprocessor_file = folder / "preprocessor_config.json"
    preprocessor = read_json(preprocessor_file, "preprocessing settings") if preprocessor_file.is_file() else None
    config = family.convert_config(hf, preprocessor)
    return config, family.convert_state(read_tensors(folder), f"{folder} ({hf['model_type']})", config)
