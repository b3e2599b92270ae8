"""Device selection with ultralytics' spellings: None (CUDA if present), 'cpu', '0', 'cuda:1', 'mps', 0."""

from __future__ import annotations

import torch

from ..errors import ConfigError


def select_device(device: str | int | torch.device | None = None) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device is None or device == "":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    text = str(device).strip().lower()
    if text.isdigit():
        text = f"cuda:{text}"
    try:
        selected = torch.device(text)
    except RuntimeError:
        selected = None
    if selected is None or selected.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {device!r}: expected cpu, cuda, cuda:N, N or mps") from None
    if selected.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine (use device=cpu)")
    if selected.type == "cuda" and (selected.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    if selected.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: MPS is not available on this machine")
    return selected
