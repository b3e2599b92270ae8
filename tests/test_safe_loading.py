"""Checkpoints: nothing from a file runs, bad files give one clear error, our format round-trips."""

from __future__ import annotations

import os
import zipfile

import pytest
import torch
from conftest import PHOTOS

from detr_toolkit import RTDETR
from detr_toolkit.errors import CheckpointError


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
    with pytest.raises(CheckpointError, match="not an RT-DETR checkpoint"):
        RTDETR(path)


def test_ultralytics_yolo_checkpoint_is_named(tmp_path):
    from ultralytics import YOLO

    path = tmp_path / "yolo.pt"
    YOLO("yolov8n.yaml").save(str(path))
    with pytest.raises(CheckpointError, match="DetectionModel, not an RT-DETR"):
        RTDETR(path)


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


def test_our_format_round_trips(tmp_path, ultralytics_l):
    model = RTDETR(ultralytics_l)
    path = model.save(tmp_path / "model.safetensors")
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"
    again = RTDETR(path)
    assert again.names == model.names and again.config == model.config
    a = model.predict(PHOTOS[0], conf=0.2, verbose=False)[0].boxes.data
    b = again.predict(PHOTOS[0], conf=0.2, verbose=False)[0].boxes.data
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
    config["nc"] = 7
    bad = save_weights(state, config, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="do not fit the model config"):
        RTDETR(bad)
