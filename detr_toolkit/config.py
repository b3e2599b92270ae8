"""Model configs: YAML files under `configs/` (shipped with the package), read into plain dicts."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

# A wheel ships the configs inside the package (`detr_toolkit.configs`); a source checkout or an editable
# install has them in configs/ beside the package.
_CHECKOUT_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def packaged_configs() -> Path:
    """The folder holding the shipped model configs."""
    try:
        return Path(str(resources.files("detr_toolkit.configs")))
    except ModuleNotFoundError:
        return _CHECKOUT_CONFIGS


def find_config(name: str | Path) -> Path:
    """`name` as a path if it exists, else a shipped config of that name (`rtdetr-l.yaml` or `rtdetr-l`)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    stem = Path(name).name
    for candidate in (packaged_configs() / stem, packaged_configs() / f"{stem}.yaml"):
        if candidate.is_file():
            return candidate
    known = sorted(p.name for p in packaged_configs().glob("*.yaml"))
    raise ConfigError(f"{name}: no such config file (shipped configs: {', '.join(known)})")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; ConfigError naming the file if it is missing, malformed or not a mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    return data


def load_model_config(name: str | Path) -> dict[str, Any]:
    """A model config by path or shipped name; class names default to '0', '1', ... when not given."""
    path = find_config(name)
    config = load_yaml(path)
    nc = config.get("nc")
    names = config.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    if names is not None and (not isinstance(names, dict) or len(names) != nc):
        raise ConfigError(f"{path}: names must list exactly nc={nc} class names")
    config["names"] = {int(k): str(v) for k, v in names.items()} if names else {i: str(i) for i in range(nc or 0)}
    return config
