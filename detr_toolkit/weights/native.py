"""Our own weights format: one safetensors file holding the state dict and, as metadata, the model config.

No pickle anywhere: the file cannot run code, and it is self-describing (the config rebuilds the model).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError

FORMAT = "detr-toolkit/1"


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one step, so a reader (or a run
    killed mid-write) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_weights(state_dict: dict[str, torch.Tensor], config: dict, path: str | Path) -> Path:
    """Write `state_dict` + `config` to `path` atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_file(path) as tmp:
        save_file(tensors, tmp, metadata={"format": FORMAT, "config": json.dumps(config)})
    return Path(path)


def load_weights(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a file written by `save_weights` -> (config, state dict)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise CheckpointError(f"{path}: a safetensors file, but not a detr-toolkit model (no config inside)")
            state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: corrupt safetensors file ({error})") from None
    config = json.loads(metadata["config"])
    config["names"] = {int(k): v for k, v in config.get("names", {}).items()}
    return config, state
