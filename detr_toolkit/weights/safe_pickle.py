"""Read pickled PyTorch checkpoints of other libraries without running their code.

A pickle may call any importable function while it loads (`os.system` included), so foreign `.pt` files
are read with an unpickler that resolves only an allow-list: tensor and storage rebuilders, plain
containers, dtypes and numpy scalars. Classes of the module tree (`torch.nn.modules.*` and the
libraries listed in `MODULE_TREE_PREFIXES`) are replaced by inert stand-ins that only keep the state
pickle hands them, so their `_parameters`, `_buffers` and `_modules` can be read as data. Any other
global refuses the file before anything runs.
"""

from __future__ import annotations

import collections
import functools
import math
import pickle
import types
import zipfile
from pathlib import Path
from typing import Any

import torch

from .. import limits
from ..errors import CheckpointError

# Modules whose classes may appear as nodes of a pickled module tree; never imported, only named.
MODULE_TREE_PREFIXES = ("torch.nn.modules.", "ultralytics.")
# What loading a damaged or hand-made pickle raises, from torch's reader or from an allow-listed global.
CORRUPT = (
    RuntimeError,
    EOFError,
    ValueError,
    zipfile.BadZipFile,
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    ArithmeticError,
    RecursionError,
)
# Plain records that checkpoints carry as metadata (rf-detr's training arguments); also stand-ins.
RECORD_CLASSES = {("argparse", "Namespace")}


def _rebuild_tensor(storage: Any, storage_offset: int, size: tuple, stride: tuple, *args: Any) -> torch.Tensor:
    """torch's `_rebuild_tensor_v2`, refusing a tensor that claims more elements than its storage holds: a view a
    small file could use to ask for gigabytes once anything copies it."""
    elements, held = math.prod(size), storage._untyped_storage.nbytes() // storage.dtype.itemsize
    if elements > held:
        raise pickle.UnpicklingError(f"a tensor of {elements:,} elements over a storage of {held:,}")
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, *args)


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("_codecs", "encode"): __import__("codecs").encode,  # how protocol 2 stores bytes
}


@functools.cache
def _numpy_globals() -> dict[tuple[str, str], Any]:
    """numpy scalars/arrays in metadata (e.g. training metrics), as torch's weights-only loader allows."""
    import numpy as np

    multiarray = getattr(np, "_core", None) or np.core
    found: dict[tuple[str, str], Any] = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}

    def reconstruct(subtype: type, shape: Any, dtype: Any) -> Any:
        """numpy's `_reconstruct`, which numpy's own pickles call with shape (0,) before setting the data; any other
        shape would allocate that much from a few bytes of pickle."""
        if tuple(shape) != (0,):
            raise pickle.UnpicklingError(f"it rebuilds a numpy array of shape {tuple(shape)} from nothing")
        return multiarray.multiarray._reconstruct(subtype, shape, dtype)

    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found[(module, "scalar")] = multiarray.multiarray.scalar
        found[(module, "_reconstruct")] = reconstruct
    for name in ("float64", "float32", "float16", "int64", "int32", "bool_"):
        found[("numpy", name)] = getattr(np, name)
    found.update({("numpy.dtypes", cls.__name__): cls for cls in vars(np.dtypes).values() if isinstance(cls, type)})
    return found


class ForeignObject:
    """Inert stand-in for a class of a foreign module tree: records pickled state as attributes."""

    foreign_name = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        self.__dict__["_init_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<foreign {self.foreign_name}>"


_stand_ins: dict[str, type] = {}


def _stand_in(module: str, name: str) -> type:
    qualified = f"{module}.{name}"
    if qualified not in _stand_ins:
        _stand_ins[qualified] = type(name, (ForeignObject,), {"foreign_name": qualified})
    return _stand_ins[qualified]


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only the allow-list above; see the module docstring."""

    def find_class(self, module: str, name: str) -> Any:
        safe = _SAFE_GLOBALS.get((module, name)) or _numpy_globals().get((module, name))
        if safe is not None:
            return safe
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module.startswith(MODULE_TREE_PREFIXES) and name.isidentifier()) or (module, name) in RECORD_CLASSES:
            return _stand_in(module, name)
        raise pickle.UnpicklingError(f"it asks to import {module}.{name}, which a weights file never needs")


# torch.load takes the unpickler through a module-like `pickle_module`.
restricted_pickle = types.SimpleNamespace(
    __name__="detr_toolkit.weights.safe_pickle", Unpickler=RestrictedUnpickler, load=None
)
restricted_pickle.load = lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load()


def load_foreign_checkpoint(path: str | Path) -> Any:
    """Load a torch-pickled checkpoint with the restricted unpickler; raise CheckpointError if refused."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (expected a torch.save zip archive)")
    _check_expansion(path)
    try:
        # weights_only=False only because torch's weights-only unpickler cannot stand in for foreign
        # classes; the restricted unpickler above is the gate, and it refuses any other global.
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=restricted_pickle)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path}: refused to load: {error}") from None
    except CORRUPT as error:  # allow-listed rebuilders called with the wrong arguments are corrupt files too
        detail = f"{type(error).__name__}: {error}".splitlines()[0]
        raise CheckpointError(f"{path}: corrupt checkpoint ({detail})") from None


def _check_expansion(path: Path) -> None:
    """LimitError for an archive entry that inflates far beyond its stored size (a zip bomb): torch writes
    checkpoints uncompressed, so a real one expands by nothing."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: corrupt checkpoint ({error})") from None
    for entry in entries:
        if entry.file_size > (1 << 20):
            ratio = entry.file_size // max(entry.compress_size, 1)
            limits.CHECKPOINT_EXPANSION.check(ratio, f"{path}: archive entry {entry.filename} expands")


def module_tree_state(root: Any) -> dict[str, torch.Tensor]:
    """The `state_dict()` a pickled module tree would have: persistent parameters and buffers by dotted name.

    Walked without recursion, each node once: a hostile pickle may nest modules deeply or in a cycle.
    """
    state: dict[str, torch.Tensor] = {}
    stack, seen = [("", root)], set()
    while stack:
        prefix, node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        skip = getattr(node, "_non_persistent_buffers_set", set())
        for name, tensor in {**getattr(node, "_parameters", {}), **getattr(node, "_buffers", {})}.items():
            if tensor is not None and name not in skip:
                state[prefix + name] = tensor.detach() if isinstance(tensor, torch.Tensor) else tensor
        children = [(f"{prefix}{name}.", child) for name, child in getattr(node, "_modules", {}).items() if child]
        stack.extend(reversed(children))
    return state
