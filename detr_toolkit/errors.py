"""User-facing errors: each carries a one-line message naming the thing at fault and the problem.

The CLI prints them as `error: <message>` and exits with status 2; the Python API raises them.
"""


class DetrToolkitError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class ConfigError(DetrToolkitError, ValueError):
    """A model or dataset config is malformed or has unknown keys."""


class CheckpointError(DetrToolkitError, ValueError):
    """A checkpoint is missing, corrupt, unsafe, or of an architecture we cannot load."""


class SourceError(DetrToolkitError, ValueError):
    """An image/video source is missing, empty or unreadable."""


class DatasetError(DetrToolkitError, ValueError):
    """A dataset file, image or label is missing or malformed (the message names file and line)."""
