"""Model configs: YAML files under `configs/` (shipped with the package), read into plain dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from . import limits
from .errors import ConfigError

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when PyYAML has it: 10x faster

# A wheel ships the model configs inside the package (detr_toolkit/configs/); a source checkout or an editable
# install has them in configs/ beside the package.
_INSTALLED_CONFIGS = Path(__file__).resolve().parent / "configs"
_CHECKOUT_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def packaged_configs() -> Path:
    """The folder holding the shipped model configs."""
    return _INSTALLED_CONFIGS if _INSTALLED_CONFIGS.is_dir() else _CHECKOUT_CONFIGS


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


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Nodes `node` stands for once its aliases are expanded (an alias repeats its anchor's whole subtree)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise ConfigError("a YAML anchor contains itself")
    open_nodes.add(key)
    children = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1
    for child in children:
        size += _expanded_size(child, sizes, open_nodes)
        if size > limits.YAML_NODES.value:  # stop counting early: a billion-laughs file is huge only expanded
            break
    open_nodes.discard(key)
    sizes[key] = size
    return size


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; ConfigError naming the file if it is missing, malformed or not a mapping, LimitError if
    it is larger than limits.YAML_BYTES or its aliases expand beyond limits.YAML_NODES (checked before anything is
    built from it)."""
    path = Path(path)
    if not path.is_file():  # missing, a folder, or a FIFO whose read would block
        raise ConfigError(f"{path}: no such file")
    try:
        limits.YAML_BYTES.check(path.stat().st_size, f"{path}: a file")
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, where: str) -> dict[str, Any]:
    """A YAML mapping from `text` (what `where` names in errors), within the limits load_yaml keeps."""
    limits.YAML_BYTES.check(len(text.encode("utf-8", "surrogatepass")), f"{where}: YAML text")
    try:
        loader = SAFE_LOADER(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                limits.YAML_NODES.check(_expanded_size(node, {}, set()), f"{where}: its content")
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}: malformed YAML{line}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
    return data


def class_names(names: Any, nc: Any, where: str) -> dict[int, str]:
    """{index: name} of a model's `nc` classes, from a list or an {index: name} mapping (indices 0..nc-1, as
    integers or digit strings such as JSON's keys), or '0', '1', ... when no names are given. `nc` is checked
    against its limit before anything is made from it."""
    if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
        raise ConfigError(f"{where}: nc (the number of classes) must be a positive integer, got {nc!r}")
    limits.MODEL_CLASSES.check(nc, f"{where}: nc={nc}")
    if names is None or (isinstance(names, (list, dict)) and not names):
        return {i: str(i) for i in range(nc)}
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict):
        raise ConfigError(f"{where}: names must be a list or an {{index: name}} mapping, got {type(names).__name__}")
    indices = {k if isinstance(k, int) and not isinstance(k, bool) else int(k) if str(k).isdigit() else None: v
               for k, v in names.items()}  # fmt: skip
    if set(indices) != set(range(nc)):
        raise ConfigError(
            f"{where}: names must name exactly the classes 0..{nc - 1}, got keys {sorted(map(str, names))[:5]}"
        )
    return {i: str(indices[i]) for i in range(nc)}


BASE_DEPTH = 8  # configs a chain of `base:` keys may pass through


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override`'s keys on top: mappings merge key by key, anything else replaces; so does a mapping
    of another `type` (a different backbone, encoder or decoder keeps none of the base's keys)."""
    merged = dict(base)
    for key, value in override.items():
        below = merged.get(key)
        same_kind = (
            isinstance(value, dict)
            and isinstance(below, dict)
            and value.get("type", below.get("type")) == below.get("type")
        )
        merged[key] = merge(below, value) if same_kind else value
    return merged


def _with_bases(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The YAML at `path`, on top of the config its `base:` key names (a path beside it, or a shipped config)."""
    config = load_yaml(path)
    base = config.pop("base", None)
    if base is None:
        return config
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must name a config file, got {base!r}")
    beside = path.parent / base
    base_path = find_config(beside if beside.is_file() else base)
    if base_path.resolve() in chain or len(chain) >= BASE_DEPTH:
        raise ConfigError(f"{path}: base {base!r} leads back to itself or through more than {BASE_DEPTH} configs")
    base_config = _with_bases(base_path, (*chain, path.resolve()))
    if "nc" in config and "names" not in config:  # another class count: the base's names name other classes
        base_config.pop("names", None)
    return merge(base_config, config)


def load_model_config(name: str | Path) -> dict[str, Any]:
    """A model config by path or shipped name; class names default to '0', '1', ... when not given.

    A config may start from another: `base: rtdetr-r50.yaml` (beside it, or shipped), whose keys it overrides.
    """
    path = find_config(name)
    config = _with_bases(path)
    names = config.get("names")
    nc = config.get("nc", len(names) if isinstance(names, (list, dict)) else None)
    config["names"] = class_names(names, nc, str(path))
    return config
