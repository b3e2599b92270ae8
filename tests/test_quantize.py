"""int8 export: static QDQ quantization calibrated on a dataset's images keeps the accuracy of float32."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from conftest import detect
from torchvision.ops import box_iou

from detr_toolkit import RTDETR
from detr_toolkit.data.synthetic import make_synthetic
from detr_toolkit.engine.quantize import QUANTIZED_PARTS, node_module
from detr_toolkit.errors import ConfigError, DatasetError

pytestmark = pytest.mark.slow  # every test here takes seconds (see the README's test commands)

DEMO = Path(__file__).parent.parent / "assets" / "rtdetr-tiny-shapes.safetensors"


def test_int8_export_keeps_the_accuracy_of_float32(tmp_path, capsys):
    data = make_synthetic(tmp_path / "shapes", train=32, val=80, seed=11)
    file = RTDETR(DEMO).export(int8=True, data=data, file=tmp_path / "demo.onnx")
    assert Path(file) == tmp_path / "demo-int8.onnx" and (tmp_path / "demo.onnx").is_file()
    printed = capsys.readouterr().out
    assert "mAP50-95 int8 " in printed and "(float32 " in printed
    graph = onnx.load(file)
    # the backbone's and encoder's convolutions and matrix products take int8 weights; the decoder's stay float
    producer = {output: node.op_type for node in graph.graph.node for output in node.output}
    compute = [n for n in graph.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    quantized = [n for n in compute if producer.get(n.input[1]) == "DequantizeLinear"]
    assert len(quantized) > 20 and all(node_module(n).startswith(QUANTIZED_PARTS) for n in quantized)
    decoder = [n for n in compute if node_module(n).startswith("detector.decoder")]
    assert decoder and not set(map(id, decoder)) & set(map(id, quantized))
    assert {p.key for p in graph.metadata_props} >= {"names", "imgsz", "quantization"}
    int8, full = RTDETR(file), RTDETR(tmp_path / "demo.onnx")
    ours, theirs = int8.val(data, verbose=False)["metrics"], full.val(data, verbose=False)["metrics"]
    assert theirs["mAP50-95"] > 0.6  # a model that detects, so that agreement means something
    for key in ("mAP50-95", "mAP50"):
        assert abs(ours[key] - theirs[key]) < 0.01, (key, ours[key], theirs[key])  # the bound: 1 point


def test_int8_needs_a_dataset_with_images(tmp_path):
    with pytest.raises(ConfigError, match="int8=True: needs data="):
        RTDETR(DEMO).export(int8=True, file=tmp_path / "demo.onnx")
    empty = tmp_path / "empty"
    for split in ("train", "val"):
        (empty / "images" / split).mkdir(parents=True)
    (empty / "data.yaml").write_text(f"path: {empty}\ntrain: images/train\nval: images/val\nnames: [a, b, c, d]\n")
    with pytest.raises(DatasetError, match="empty"):
        RTDETR(DEMO).export(int8=True, data=empty / "data.yaml", file=tmp_path / "demo.onnx")
    run = detect("export", "--model", DEMO, "--int8", "--data", empty / "data.yaml", "--file", tmp_path / "cli.onnx")
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "empty" in run.stderr, run.stderr


def test_cli_int8_export_keeps_an_earlier_export_and_calibrates_on_a_folder(tmp_path):
    """`export --int8` after `export --dynamic` keeps the dynamic file (and says so); a folder of images calibrates
    (no labels, no classes needed: the export is not scored); a failed int8 export leaves no file behind."""
    photo = Path(__file__).parent.parent / "assets" / "shapes.jpg"
    dynamic = detect("export", "--model", DEMO, "--dynamic", "--file", tmp_path / "demo.onnx")
    assert dynamic.returncode == 0, dynamic.stderr
    before = (tmp_path / "demo.onnx").read_bytes()
    folder = make_synthetic(tmp_path / "shapes", train=8, val=2, seed=2).parent / "images" / "train"
    run = detect("export", "--model", DEMO, "--int8", "--data", folder, "--file", tmp_path / "demo.onnx")
    assert run.returncode == 0, run.stderr
    assert f"kept {tmp_path / 'demo.onnx'}" in run.stdout and "int8 not scored" in run.stdout
    assert run.stdout.strip().endswith(f"to {tmp_path / 'demo-int8.onnx'}")
    assert (tmp_path / "demo.onnx").read_bytes() == before
    int8 = RTDETR(tmp_path / "demo-int8.onnx").predict(photo, verbose=False)[0].boxes
    float32 = RTDETR(tmp_path / "demo.onnx").predict(photo, verbose=False)[0].boxes
    assert len(float32) >= 2 and sorted(int8.cls.tolist()) == sorted(float32.cls.tolist())
    overlap = box_iou(int8.xyxy, float32.xyxy) * (int8.cls[:, None] == float32.cls[None])
    assert (overlap.max(1).values > 0.9).all(), overlap
    empty = tmp_path / "no-images"
    empty.mkdir()
    failed = detect("export", "--model", DEMO, "--int8", "--data", empty, "--file", tmp_path / "new.onnx")
    assert failed.returncode == 2 and "no images to calibrate" in failed.stderr, failed.stderr
    assert not list(tmp_path.glob("new*"))
