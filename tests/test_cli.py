"""The `detect` command as a user runs it: output lines, saved runs, one-line errors with exit status 2."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import PHOTOS


def detect(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "detr_toolkit.cli", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def test_predict_prints_a_line_per_image_and_saves_runs(tmp_path, tiny_weights):
    run = detect("predict", PHOTOS[0], "--model", tiny_weights, "--conf", "0.0", "--max-det", "3", "--save",
                 "--save-txt", "--project", tmp_path / "runs")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert re.search(r"^bus\.jpg: 128x128 (\d+ \w+, )+[\d.]+ms$", run.stdout, re.MULTILINE), run.stdout
    assert f"Results saved to {tmp_path / 'runs' / 'predict'}" in run.stdout
    assert (tmp_path / "runs" / "predict" / "bus.jpg").is_file()
    assert len((tmp_path / "runs" / "predict" / "labels" / "bus.txt").read_text().splitlines()) == 3
    again = detect(f"source={PHOTOS[1]}", "predict", f"model={tiny_weights}", "save=True", "imgsz=96",
                   f"project={tmp_path / 'runs'}")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "zidane.jpg: 96x96 " in again.stdout
    assert (tmp_path / "runs" / "predict-2" / "zidane.jpg").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "absent.jpg"], "absent.jpg: no such file or directory"),
        (["predict", PHOTOS[0], "--conf", "1.5"], "conf=1.5: must be within 0..1"),
        (["predict", PHOTOS[0], "--imgsz", "100"], "imgsz=100: must be a multiple of 32 for this model"),
        (["predict"], "predict needs a SOURCE (an image, video, directory, glob or URL)"),
        (["export", "--format", "tflite"], "format='tflite': must be one of onnx"),
        (["export", "--imgsz", "100"], "imgsz=100: must be a multiple of 32 for this model"),
    ],
)
def test_user_errors_are_one_line_with_status_2(args, message, tiny_weights):
    run = detect(*args, "--model", tiny_weights)
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {message}"
    assert "Traceback" not in run.stderr


def test_bad_checkpoints_are_one_line_with_status_2(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00" * 64)
    for model, message in [(corrupt, "not a PyTorch checkpoint"), (tmp_path / "absent.pt", "no such checkpoint file")]:
        run = detect("predict", PHOTOS[0], "--model", model)
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr


def test_unknown_options_and_debug(tiny_weights):
    unknown = detect("predict", PHOTOS[0], "colour=red")
    assert unknown.returncode == 2 and "unrecognised argument 'colour=red'" in unknown.stderr
    debug = detect("--debug", "predict", "absent.jpg", "--model", tiny_weights)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_help_documents_the_options():
    assert "predict" in detect("--help").stdout
    text = detect("predict", "--help").stdout
    for option in ("--model", "--conf", "--imgsz", "--device", "--save", "--save-txt", "--project", "--name"):
        assert option in text


def test_official_weights_offline_say_where_to_put_them(tmp_path, monkeypatch):
    from detr_toolkit.errors import CheckpointError
    from detr_toolkit.weights import hub

    monkeypatch.setenv("DETR_TOOLKIT_CACHE", str(tmp_path))
    monkeypatch.setitem(hub.OFFICIAL_WEIGHTS, "rtdetr-l.pt", "http://127.0.0.1:9/rtdetr-l.pt")
    with pytest.raises(CheckpointError, match=f"put it at {tmp_path / 'weights' / 'rtdetr-l.pt'}"):
        hub.resolve_weights("rtdetr-l.pt")
