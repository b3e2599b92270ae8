"""Training checkpoints (`weights/last.pt`): writing them whole, reading them back safely, and which settings a
resumed run may change.

A checkpoint holds only tensors and plain values (read with `weights_only=True`): the model, its EMA, the
optimizer and scaler states, the epoch, the best fitness, the model config and class names, and the training
settings it ran with.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from ..files import write_file
from ..settings import TrainArgs

# Settings a resumed run may change; any other must stay as the run was started (a new lr, batch or dataset
# would be another run, not this one continued). More epochs= or time= continue a finished run: its schedule is
# planned again over the longer run.
RESUMABLE = ("epochs", "time", "patience", "workers", "device", "threads", "verbose", "plots", "loggers")
# What a checkpoint holds, and of which type.
KEYS = {"epoch": int, "model": dict, "ema": dict, "ema_updates": int, "optimizer": dict, "scaler": dict,
        "config": dict, "names": dict, "train_args": dict}  # fmt: skip


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise `state` in memory first, then write it atomically: a full disk fails as one clear error and
    leaves the previous checkpoint whole."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_file(path, buffer.getbuffer())


def find_checkpoint(resume: str | bool, project: str | Path) -> Path:
    """The checkpoint `resume=` names: a path, or with True the newest `project/*/weights/last.pt`."""
    if resume is True:
        candidates = sorted(Path(project).glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise CheckpointError(f"resume=True: no {Path(project)}/*/weights/last.pt to resume")
        return candidates[-1]
    path = Path(resume)
    if not path.is_file() and path.parent.is_dir() and path.parent.name == "weights":
        raise CheckpointError(f"{path}: the run has no complete checkpoint (it stopped before or during its first "
                              "save): nothing to resume; start it again")  # fmt: skip
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint to resume")
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint of ours, read without running code; CheckpointError naming the file otherwise."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (any unreadable file is the same user error)
        raise CheckpointError(f"{path}: not a training checkpoint ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a training checkpoint of ours")
    wrong = [key for key, kind in KEYS.items() if not isinstance(checkpoint.get(key), kind)
             or isinstance(checkpoint.get(key), bool)]  # fmt: skip
    if wrong:
        raise CheckpointError(f"{path}: not a training checkpoint of ours ({', '.join(wrong)} missing or malformed)")
    if checkpoint["epoch"] < 0 or checkpoint["ema_updates"] < 0:
        raise CheckpointError(f"{path}: not a training checkpoint of ours (a negative epoch or EMA count)")
    return checkpoint


def resumed_args(stored: dict[str, Any], given: TrainArgs, path: Path) -> TrainArgs:
    """The settings of the run in `path`, with the user's changes to RESUMABLE settings applied; a change to any
    other setting is refused by name."""
    known = TrainArgs.settings()
    try:
        args = TrainArgs.create(**{k: v for k, v in stored.items() if k in known and k != "resume"})
    except ConfigError as error:
        raise CheckpointError(f"{path}: its training settings are malformed ({error})") from None
    changes = {
        name: getattr(given, name) for name in given.given - {"resume"} if getattr(given, name) != getattr(args, name)
    }
    refused = sorted(set(changes) - set(RESUMABLE))
    if refused:
        was = ", ".join(f"{name}={getattr(args, name)!r}" for name in refused)
        raise ConfigError(
            f"{path}: a resumed run keeps its settings ({was}); it may change only {', '.join(RESUMABLE)}"
        )
    for name, value in changes.items():
        setattr(args, name, value)
    return args
