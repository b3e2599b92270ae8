"""Training callbacks: your functions, run at named moments of a training run with the trainer as their argument.

The event names are ultralytics', so its callbacks port unchanged:

    def log(trainer):
        print(trainer.epoch, trainer.metrics["mAP50-95"])

    model.add_callback("on_fit_epoch_end", log)
    model.train(data="coco8.yaml", epochs=10)

Events, in the order a run meets them (callbacks run in the process that logs and saves: rank 0 under DDP):

    on_pretrain_routine_start   the trainer is made: `args`, `device`; data and model not yet
    on_pretrain_routine_end     data, model, optimizer ready (`train_set`, `model`, `optimizer`, `ema`, `save_dir`)
    on_train_start              before the first epoch (or the resumed one)
    on_train_epoch_start        before each epoch's batches (`epoch`, 0-based)
    on_train_batch_end          after each batch (`batch_index`, `loss_items`: the batch's losses, None if skipped)
    on_train_epoch_end          after each epoch's batches (`metrics`: the mean losses, throughput, learning rates)
    on_model_save               after each epoch's checkpoints are written (`last`, `best`: their paths)
    on_fit_epoch_end            after each epoch's validation and save (`metrics`: its results.csv row, mAPs included)
    on_train_end                after the final scoring of the best weights

A callback that raises stops the run as any error does (its last checkpoint kept).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

EVENTS = (
    "on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start", "on_train_epoch_start",
    "on_train_batch_end", "on_train_epoch_end", "on_model_save", "on_fit_epoch_end", "on_train_end",
)  # fmt: skip

Callbacks = dict[str, list[Callable[[Any], Any]]]


def default_callbacks() -> Callbacks:
    """An empty list of callbacks per event."""
    return {event: [] for event in EVENTS}


def check_event(event: str) -> str:
    """`event`, or ConfigError naming the events there are."""
    if event not in EVENTS:
        raise ConfigError(f"callback event {event!r} unknown (known: {', '.join(EVENTS)})")
    return event


def add_callback(callbacks: Callbacks, event: str, function: Callable[[Any], Any]) -> None:
    """Append `function` to `event`'s callbacks; ConfigError for an event we do not have or a non-callable."""
    check_event(event)
    if not callable(function):
        raise ConfigError(f"callback for {event}: {function!r} is not callable")
    callbacks[event].append(function)
