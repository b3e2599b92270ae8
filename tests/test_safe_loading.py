"""Checkpoints: nothing from a file runs, bad files give one clear error, our format round-trips."""

from __future__ import annotations

import os
import zipfile

import pytest
import torch
from conftest import PHOTOS

from detr_toolkit import RTDETR
from detr_toolkit.errors import CheckpointError, LimitError


class RunsCommand:
    """Pickles as a call of os.system: what a malicious checkpoint does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("payload", ["model", "ema", "date"])
def test_pickle_that_runs_code_is_refused(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": torch.zeros(1), payload: RunsCommand(f"touch {marker}")}, path)
    with pytest.raises(CheckpointError, match=r"refused.*system"):
        RTDETR(path)
    assert not marker.exists(), "the checkpoint's code ran"


def test_pickle_with_eval_is_refused(tmp_path):
    class Evaluates:
        def __reduce__(self):
            return eval, ("1 + 1",)

    path = tmp_path / "evil.pt"
    torch.save({"model": Evaluates()}, path)
    with pytest.raises(CheckpointError, match=r"refused.*builtin__\.eval"):
        RTDETR(path)


@pytest.mark.parametrize(
    "content, message",
    [(b"", "not a PyTorch checkpoint"), (b"\x00garbage" * 100, "not a PyTorch checkpoint")],
)
def test_non_checkpoint_files(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        RTDETR(path)


def test_truncated_checkpoint(tmp_path, ultralytics_l):
    path = tmp_path / "truncated.pt"
    data = ultralytics_l.read_bytes()
    path.write_bytes(data[: len(data) // 2] + data[-200:])  # keeps a zip directory-like tail
    with pytest.raises(CheckpointError, match=str(path)):
        RTDETR(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        RTDETR(tmp_path / "absent.pt")


def test_foreign_zip_without_model(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a checkpoint of a known format"):
        RTDETR(path)


def test_ultralytics_yolo_checkpoint_is_named(tmp_path):
    from ultralytics import YOLO

    path = tmp_path / "yolo.pt"
    YOLO("yolov8n.yaml").save(str(path))
    with pytest.raises(CheckpointError, match="DetectionModel, not an RT-DETR"):
        RTDETR(path)


@pytest.mark.slow
def test_fused_ultralytics_checkpoint_loads(tmp_path, ultralytics_l):
    """ultralytics saves a model as held in memory: after predict it is fused (conv+bn, RepConv folded)."""
    from ultralytics import RTDETR as PeerRTDETR

    peer = PeerRTDETR(str(ultralytics_l))
    peer.predict(str(PHOTOS[0]), verbose=False)
    fused_path = tmp_path / "fused.pt"
    peer.save(str(fused_path))
    assert zipfile.is_zipfile(fused_path)
    original = RTDETR(ultralytics_l).predict(PHOTOS[1], conf=0.1, verbose=False)[0]
    refolded = RTDETR(fused_path).predict(PHOTOS[1], conf=0.1, verbose=False)[0]
    assert len(original) == len(refolded) > 0
    assert torch.allclose(original.boxes.data, refolded.boxes.data, atol=0.05)


@pytest.mark.slow
def test_our_format_round_trips(tmp_path, ultralytics_l):
    model = RTDETR(ultralytics_l)
    path = model.save(tmp_path / "model.safetensors")
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"
    again = RTDETR(path)
    assert again.names == model.names and again.config == model.config
    a = model.predict(PHOTOS[0], conf=0.2, verbose=False)[0].boxes.data
    b = again.predict(PHOTOS[0], conf=0.2, verbose=False)[0].boxes.data
    assert torch.equal(a, b)


def test_files_of_earlier_versions_load(tmp_path, tiny_weights):
    """Before backbones reported their strides, our files stored the decoder's `feat_strides`."""
    from detr_toolkit.weights import load_weights, save_weights

    config, state = load_weights(tiny_weights)
    legacy = save_weights(state, {**config, "decoder": {**config["decoder"], "feat_strides": [8, 16, 32]}},
                          tmp_path / "legacy.safetensors")  # fmt: skip
    a = RTDETR(tiny_weights).predict(PHOTOS[0], conf=0.0, verbose=False)[0].boxes.data
    b = RTDETR(legacy).predict(PHOTOS[0], conf=0.0, verbose=False)[0].boxes.data
    assert torch.equal(a, b)


def test_safetensors_of_another_library(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a detr-toolkit model"):
        RTDETR(path)


def test_weights_that_do_not_fit_the_config(tmp_path, tiny_weights):
    from detr_toolkit.weights import load_weights, save_weights

    config, state = load_weights(tiny_weights)
    config["nc"], config["names"] = 7, {}
    bad = save_weights(state, config, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="do not fit the model config"):
        RTDETR(bad)


# --- hostile and malformed checkpoints: one CheckpointError naming the file, in bounded time and memory ----------


def _long(n: int) -> bytes:
    """A pickle LONG1 opcode for the integer n."""
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def _patched_checkpoint(path, old: bytes, new: bytes) -> None:
    """torch.save of {"model": a 4-element tensor}, with `old` replaced by `new` in its pickle."""
    import io

    buffer = io.BytesIO()
    torch.save({"model": torch.zeros(4)}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source, zipfile.ZipFile(path, "w") as target:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename.endswith("data.pkl"):
                assert old in data
                data = data.replace(old, new)
            target.writestr(entry.filename, data)


@pytest.mark.parametrize(
    "old, new, message",
    [
        (b"QK\x00K\x04\x85", b"QK\x00" + _long(10**11) + b"\x85", "a tensor of 100,000,000,000 elements over"),
        (
            b"K\x04\x85q\x08K\x01\x85",
            _long(10**11) + b"\x85q\x08K\x00\x85",
            "a tensor of 100,000,000,000 elements over",
        ),
        (b"K\x04tq", _long(10**11) + b"tq", "corrupt checkpoint"),
    ],
    ids=["view-beyond-storage", "stride-0-view", "storage-size-lie"],
)
def test_small_checkpoint_asking_for_gigabytes(tmp_path, old, new, message):
    path = tmp_path / "greedy.pt"
    _patched_checkpoint(path, old, new)
    assert path.stat().st_size < 2000
    with pytest.raises(CheckpointError, match=message):
        RTDETR(path)


def test_numpy_array_from_nothing_is_refused(tmp_path):
    import pickle

    import numpy as np

    class HugeArray:
        def __reduce__(self):
            return np._core.multiarray._reconstruct, (np.ndarray, (10**11,), b"b")

    path = tmp_path / "numpy.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"model": HugeArray()}, protocol=2))
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    with pytest.raises(CheckpointError, match=r"numpy array of shape \(100000000000,\)"):
        RTDETR(path)


def test_zip_bomb_is_refused_before_inflating(tmp_path):
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/data/0", b"\0" * (64 << 20))
    assert path.stat().st_size < 200_000
    with pytest.raises(LimitError, match="archive/data/0 expands.*DETR_TOOLKIT_MAX_CHECKPOINT_EXPANSION"):
        RTDETR(path)


@pytest.mark.parametrize("content", [[1, 2, 3], "text", 5, {"model": 3, "args": None}, {"ema": torch.zeros(3)}])
def test_odd_pickles_are_not_tracebacks(tmp_path, content):
    """rf-detr's and ultralytics' format checks look inside only what has the right type."""
    path = tmp_path / "odd.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match="not a checkpoint of a known format"):
        RTDETR(path)


def test_cyclic_module_tree_is_malformed_not_endless(tmp_path, ultralytics_l):
    """A module tree whose child is its own parent (a pickle can say so): refused, not walked forever."""
    from detr_toolkit.weights.safe_pickle import ForeignObject, module_tree_state

    node = ForeignObject()
    node.__dict__.update(_parameters={"w": torch.zeros(1)}, _buffers={}, _modules={})
    node._modules["child"] = node
    assert list(module_tree_state(node)) == ["w"]


def _hf_folder(tmp_path):
    import peers

    folder, _ = peers.transformers_checkpoint(tmp_path, "lw_detr")
    return folder


def test_transformers_folder_with_an_unknown_or_missing_tensor(tmp_path):
    """The rename rules claim only the decoder's own modules: a tensor no rule knows is named as it is in the file,
    and a tensor the model needs but the file lacks is named too."""
    from safetensors.torch import load_file, save_file

    folder = _hf_folder(tmp_path)
    tensors = load_file(folder / "model.safetensors")
    save_file({**tensors, "model.extra_head.weight": torch.zeros(2)}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'model\.extra_head\.weight'"):
        RTDETR(folder)
    dropped = next(k for k in tensors if k.endswith("class_embed.bias"))
    save_file({k: v for k, v in tensors.items() if k != dropped}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"do not fit the model config \(missing: decoder\.score_head"):
        RTDETR(folder)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.pop("backbone_config"), "malformed transformers model folder"),
        (lambda c: c["backbone_config"].update(num_hidden_layers="many"), "malformed transformers model folder"),
        (
            lambda c: c.update(decoder_layers=10**6),
            r"num_layers=1000000: 1,000,000 layers.*DETR_TOOLKIT_MAX_MODEL_LAYERS",
        ),
        (lambda c: c.update(d_model=60000), r"parameters, above the limit.*DETR_TOOLKIT_MAX_MODEL_PARAMETERS"),
    ],
    ids=["no-backbone", "text-depth", "million-layers", "billions-of-parameters"],
)
def test_transformers_config_that_is_malformed_or_asks_too_much(tmp_path, edit, message):
    import json
    import time

    folder = _hf_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    start = time.perf_counter()
    with pytest.raises(CheckpointError if "malformed" in message else LimitError, match=message) as raised:
        RTDETR(folder)
    assert str(folder) in str(raised.value)
    assert time.perf_counter() - start < 30


def test_our_file_with_a_broken_config_inside(tmp_path, tiny_weights):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(tiny_weights), framework="pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118
    for config, message in [("{not json", "not JSON"), ('["a list"]', "not a mapping"),
                            ('{"nc": 4, "backbone": {"type": "hgnetv2", "stem": "wide"}}', "backbone")]:  # fmt: skip
        path = tmp_path / "broken.safetensors"
        save_file(tensors, path, metadata={**metadata, "config": config})
        with pytest.raises((CheckpointError, ValueError), match=message) as raised:
            RTDETR(path)
        assert str(path) in str(raised.value)


class Calls:
    """Pickles as a call of `function(*args)`: an allow-listed global given arguments it does not take."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize(
    "call",
    [
        Calls(torch._utils._rebuild_tensor_v2, 1, 2),
        Calls(torch._utils._rebuild_parameter, 1),
        Calls(torch.Size, "abc", 5),
        Calls(torch.device, 3.5),
        Calls(set, 1),
        Calls(__import__("codecs").encode, 1, 2, 3, 4),
        Calls(__import__("numpy")._core.multiarray.scalar, __import__("numpy").dtype("O"), b"x"),
        Calls(__import__("numpy").dtype, "not-a-dtype"),
    ],
    ids=["tensor", "parameter", "size", "device", "set", "bytes", "numpy-object-scalar", "numpy-dtype"],
)
def test_allowed_globals_called_wrongly_are_corrupt_files(tmp_path, call):
    import pickle

    path = tmp_path / "wrong.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"model": call}, protocol=2))
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    with pytest.raises(CheckpointError, match=r"wrong\.pt: corrupt checkpoint \(TypeError: "):
        RTDETR(path)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.float8_e4m3fn, torch.int32, torch.bool])
def test_weights_of_another_kind_of_number_are_refused(tmp_path, tiny_weights, dtype):
    """Complex, float8 or integer tensors in place of float weights: refused by name, not cast with a warning."""
    from detr_toolkit.weights import load_weights, save_weights

    config, state = load_weights(tiny_weights)
    name = next(key for key in state if key.endswith("weight"))
    weight = state[name]
    state[name] = weight.to(dtype)
    bad = save_weights(state, config, tmp_path / "cast.safetensors")
    kind = str(dtype).removeprefix("torch.")
    with pytest.raises(CheckpointError, match=rf"cast\.safetensors: .*of other kinds: {name} \({kind}\)"):
        RTDETR(bad)
    state[name] = weight.half()  # float16 weights are the same kind: they load
    RTDETR(save_weights(state, config, tmp_path / "half.safetensors"))
