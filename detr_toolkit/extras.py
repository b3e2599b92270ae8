"""Optional extras: packages a feature needs beyond the plain install, imported when the feature is used."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import DetrToolkitError


def require(module: str, feature: str, extra: str) -> ModuleType:
    """`module`, imported; where it is not installed, a DetrToolkitError saying that `feature` needs it and which
    extra of ours installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.partition(".")[0]
        raise DetrToolkitError(f"{feature} needs the {package} package: pip install 'detr-toolkit[{extra}]'") from None
