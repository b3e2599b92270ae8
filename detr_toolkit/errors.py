"""User-facing errors: each carries a one-line message naming the thing at fault and the problem.

The CLI prints them as `error: <message>` and exits with status 2; the Python API raises them.
"""

from __future__ import annotations

import re

# How torch's DataLoader re-raises an error from a worker process: "Caught X in DataLoader worker process N.",
# then "Original Traceback (most recent call last):" and the traceback, ending in "module.X: <message>".
_WORKER_ERROR = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback", re.DOTALL)


class DetrToolkitError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""

    def __init__(self, message: str = ""):
        if _WORKER_ERROR.match(message):  # keep the worker's own one-line message, not its traceback
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)


class ConfigError(DetrToolkitError, ValueError):
    """A model or dataset config, or a setting, is malformed, out of range or unknown."""


class CheckpointError(DetrToolkitError, ValueError):
    """A checkpoint is missing, corrupt, unsafe, or of an architecture we cannot load."""


class SourceError(DetrToolkitError, ValueError):
    """An image/video source is missing, empty or unreadable."""


class DatasetError(DetrToolkitError, ValueError):
    """A dataset file, image or label is missing or malformed (the message names file and line)."""


class OutputError(DetrToolkitError, OSError):
    """An output (weights, plotted images, labels, exports, run folders) cannot be written."""


class ModelOutputError(DetrToolkitError, ArithmeticError):
    """A model produced non-finite outputs (NaN or inf): broken weights, or a diverged training run."""


class LimitError(DetrToolkitError, ValueError):
    """An input asks for more than a safety limit allows (pixels, parameters, YAML nodes, ...); the message
    says which limit and how to raise it."""
