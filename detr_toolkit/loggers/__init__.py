"""Experiment trackers, plugged into training through the callback surface (engine/callbacks.py): each logger is a
set of callbacks, on where its package is installed and the `loggers` setting names it (TensorBoard by default;
MLflow and W&B when named: `loggers=[tensorboard,mlflow]`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from ..engine.callbacks import Callbacks, default_callbacks
from ..errors import ConfigError


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
