"""int8 export: static QDQ quantization calibrated on a dataset's images keeps the accuracy of float32."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from test_cli import detect

from detr_toolkit import RTDETR
from detr_toolkit.data.synthetic import make_synthetic
from detr_toolkit.engine.quantize import QUANTIZED_PARTS, node_module
from detr_toolkit.errors import ConfigError, DatasetError

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


def test_cli_int8_export(tmp_path):
    data = make_synthetic(tmp_path / "shapes", train=8, val=8, seed=2)
    run = detect("export", "--model", DEMO, "--int8", "--data", data, "--no-val", "--file", tmp_path / "demo.onnx")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith(f"to {tmp_path / 'demo-int8.onnx'}")
    assert len(RTDETR(tmp_path / "demo-int8.onnx").predict(Path(__file__).parent.parent / "assets" / "shapes.jpg"))
