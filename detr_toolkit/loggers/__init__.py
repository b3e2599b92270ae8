"""Experiment trackers, plugged into training through the callback surface (engine/callbacks.py): each logger is a
set of callbacks, on where its package is installed and the `loggers` setting names it (TensorBoard by default;
MLflow and W&B when named: `loggers=[tensorboard,mlflow]`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from ..engine.callbacks import Callbacks, default_callbacks
from ..errors import ConfigError


def epoch_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of an epoch's results.csv row (`trainer.metrics`), without its epoch: what loggers log."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if key != "epoch" and isinstance(value, (int, float)) and np.isfinite(value)
    }


def _tensorboard() -> Any:
    from .tensorboard import TensorBoardLogger

    return TensorBoardLogger()


def _mlflow() -> Any:
    from .mlflow import MLflowLogger

    return MLflowLogger()


def _wandb() -> Any:
    from .wandb import WandbLogger

    return WandbLogger()


LOGGERS: dict[str, tuple[str, Callable[[], Any]]] = {  # name -> the package it needs, its maker
    "tensorboard": ("tensorboard", _tensorboard),
    "mlflow": ("mlflow", _mlflow),
    "wandb": ("wandb", _wandb),
}


def logger_callbacks(names: list[str], required: bool) -> Callbacks:
    """The callbacks of the loggers `names` whose package is installed; ConfigError for a missing one if
    `required` (the user named it; the default list is taken where it can be)."""
    callbacks = default_callbacks()
    for name in names:
        package, make = LOGGERS[name]
        if importlib.util.find_spec(package) is None:
            if required:
                raise ConfigError(f"loggers: {name} needs the {package} package (pip install {package})")
            continue
        for event, function in make().callbacks().items():
            callbacks[event].append(function)
    return callbacks
