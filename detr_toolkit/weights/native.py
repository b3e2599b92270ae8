"""Our own weights format: one safetensors file holding the state dict and, as metadata, the model config.

No pickle anywhere: the file cannot run code, and it is self-describing (the config rebuilds the model).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load, save

from ..errors import CheckpointError
from ..files import write_file

FORMAT = "detr-toolkit/1"
# Config keys earlier versions wrote that are now derived from the model's parts: (section, key).
DERIVED_NOW = [("decoder", "feat_strides")]  # the strides the backbone reports


def save_weights(state_dict: dict[str, torch.Tensor], config: dict, path: str | Path) -> Path:
    """Write `state_dict` + `config` to `path` atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    return write_file(path, save(tensors, metadata={"format": FORMAT, "config": json.dumps(config)}))


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a safetensors file. safetensors opens only UTF-8 file names; a name that is not
    (bytes a filesystem allows) is read from the file's bytes instead."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        data = path.read_bytes()
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        return (header.get("__metadata__") or {}) if isinstance(header, dict) else {}, load(data)
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}, {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not iterable)


def read_safetensors(path: str | Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of any safetensors file; CheckpointError naming it when it is not one."""
    try:
        return _read(Path(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: corrupt safetensors file ({error})") from None


def is_ours(metadata: dict[str, str]) -> bool:
    """Whether a safetensors file's metadata says `save_weights` wrote it."""
    return metadata.get("format") == FORMAT


def load_weights(
    path: str | Path, contents: tuple[dict[str, str], dict[str, torch.Tensor]] | None = None
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a file written by `save_weights` (or its `read_safetensors` contents, read already) -> (config, state
    dict)."""
    path = Path(path)
    metadata, state = contents or read_safetensors(path)
    if not is_ours(metadata):
        raise CheckpointError(f"{path}: a safetensors file, but not a detr-toolkit model (no config inside)")
    try:
        config = json.loads(metadata["config"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: the model config inside is missing or not JSON") from None
    if not isinstance(config, dict) or not isinstance(config.get("names", {}), dict):
        raise CheckpointError(f"{path}: the model config inside is not a mapping with a names mapping")
    config["names"] = {int(k): str(v) for k, v in config.get("names", {}).items()}
    for section, key in DERIVED_NOW:
        if isinstance(config.get(section), dict):
            config[section].pop(key, None)
    return config, state
