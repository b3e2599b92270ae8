"""ONNX export: onnxruntime computes from the exported file what our PyTorch model computes (and OpenVINO from it
converted to its format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import peers
import pytest
import torch
from conftest import PHOTOS, detect
from matching import max_row_error
from test_onnx_model import assert_same_detections

from detr_toolkit import RTDETR
from detr_toolkit.engine.exporter import export_openvino

DEMO = Path(__file__).parent.parent / "assets" / "rtdetr-tiny-shapes.safetensors"


def run_onnx(file: str, images: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(file, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["output0"], {"images": images.numpy()})[0])


def run_torch(model: RTDETR, images: torch.Tensor) -> torch.Tensor:
    """What the exported graph should compute: (B, Q, 4 + C) boxes and class scores."""
    with torch.inference_mode():
        outputs = model.model(images)
    return torch.cat([outputs["boxes"], outputs["logits"].sigmoid()], -1)


@pytest.mark.slow
def test_trained_model_exports_with_a_dynamic_batch_and_its_metadata(tmp_path):
    model = RTDETR(DEMO)
    file = model.export(imgsz=128, dynamic=True, file=tmp_path / "demo.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.onnx"]  # written whole, nothing left beside it
    images = peers.photos(128)
    exported, expected = run_onnx(file, images), run_torch(model, images)
    assert exported.shape == (2, model.model.decoder.num_queries, 4 + len(model.names))
    assert max(max_row_error(a, b) for a, b in zip(exported, expected)) < 1e-4
    meta = {p.key: p.value for p in onnx.load(file).metadata_props}
    assert meta["names"] == str(model.names) and meta["imgsz"] == "[128, 128]" and meta["stride"] == "32"


@pytest.mark.slow
def test_ultralytics_checkpoint_exports_the_same_detections(ultralytics_l, tmp_path):
    """rtdetr-l made by ultralytics: the exported graph gives our (ultralytics-parity) outputs, row for row."""
    model = RTDETR(ultralytics_l)
    file = model.export(file=tmp_path / "rtdetr-l.onnx")
    images = peers.photos(640)[:1]
    exported, expected = run_onnx(file, images)[0], run_torch(model, images)[0]
    assert expected[:, 4:].max() > 0.5  # some confident detections, so that agreement means something
    assert max_row_error(exported, expected) < 1e-3  # float32 through 6 decoder layers (ultralytics' own: ~1e-3)
    expected = model.predict(PHOTOS, conf=0.25)
    # zidane.jpg's 300th and 301st encoder tokens are 3e-5 apart (logits): rounding may swap which one becomes a
    # query, and the decoder's self-attention then moves the others (0.15 px, scores 1.1e-3 on an AVX2-only EPYC)
    assert_same_detections(RTDETR(file).predict(PHOTOS, conf=0.25), expected, box_px=0.5, score=2e-3)
    openvino_model = RTDETR(export_openvino(file, tmp_path / "rtdetr-l_openvino_model"))
    assert_same_detections(openvino_model.predict(PHOTOS, conf=0.25), expected, box_px=0.5, score=2e-3)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rf_detr", "lw_detr", "rt_detr", "rt_detr_v2", "rt_detr_v2_discrete", "d_fine",
                                  "deimv2_lite", "deimv2_dinov3"])  # fmt: skip
def test_transformers_models_export(kind, tmp_path):
    """Weights of every transformers family: RF-DETR / LW-DETR (position embeddings resized at export, as ONNX
    has no antialiased bicubic; windows cut for any batch), RT-DETR with ResNet-vd (frozen batch norms folded),
    RT-DETRv2 (points per level; with discrete sampling the graph holds no GridSample), D-FINE, DEIMv2 (the lite
    encoder; DINOv3 with rotary positions and the adapter)."""
    peer, size = peers.transformers_model(kind)
    peer.save_pretrained(tmp_path / kind)
    model = RTDETR(tmp_path / kind)
    file = model.export(imgsz=size, dynamic=True, file=tmp_path / f"{kind}.onnx")
    images = peers.photos(size)
    exported, expected = run_onnx(file, images), run_torch(model, images)
    assert max(max_row_error(a, b) for a, b in zip(exported, expected)) < 1e-4
    operators = {node.op_type for node in onnx.load(file).graph.node}
    assert ("GridSample" in operators) == (kind != "rt_detr_v2_discrete")
    # torch.export traces every family; the graph takes any input size unless a ViT's position embeddings are
    # resized for it (RF-DETR, LW-DETR)
    assert {p.key: p.value for p in onnx.load(file).metadata_props}["exporter"] == "dynamo"
    onnx_model = RTDETR(file)
    assert (onnx_model.exported.imgsz is None) == (kind not in ("rf_detr", "lw_detr"))
    # The exported file predicts: the same detections as the PyTorch model, through the same Results.
    # And so does the file converted to OpenVINO's format, run by OpenVINO.
    openvino_model = RTDETR(export_openvino(file, tmp_path / f"{kind}_openvino_model"))
    sizes = [size] if onnx_model.exported.imgsz else [size, size + 2 * model.model.stride]
    for imgsz in sizes:
        settings = {"imgsz": imgsz, "conf": 0.0, "max_det": 30}
        expected = model.predict(PHOTOS, **settings)
        assert_same_detections(onnx_model.predict(PHOTOS, **settings), expected)
        assert_same_detections(openvino_model.predict(PHOTOS, **settings), expected)


@pytest.mark.slow
def test_export_falls_back_to_the_torchscript_tracer_with_the_reason(tmp_path, monkeypatch, capsys):
    """Where torch.export cannot trace a model, the TorchScript tracer exports it (batch-dynamic, fixed size), and
    the reason is printed."""
    from detr_toolkit.engine import exporter

    def fail(*args, **kwargs):
        raise RuntimeError("data-dependent control flow")

    monkeypatch.setattr(exporter, "trace_dynamo", fail)
    model = RTDETR(DEMO)
    file = model.export(dynamic=True, file=tmp_path / "fallback.onnx")
    assert (
        "torch.export could not trace the model (RuntimeError: data-dependent control flow)" in capsys.readouterr().out
    )
    assert {p.key: p.value for p in onnx.load(file).metadata_props}["exporter"] == "torchscript"
    images = torch.rand(3, 3, 96, 96)
    assert max(max_row_error(a, b) for a, b in zip(run_onnx(file, images), run_torch(model, images))) < 1e-4
    assert RTDETR(file).exported.imgsz == (96, 96)


@pytest.mark.slow
def test_cli_export_writes_next_to_the_checkpoint(tmp_path):
    weights = tmp_path / "demo.safetensors"
    weights.write_bytes(DEMO.read_bytes())
    run = detect("export", "--model", weights, "--imgsz", "96")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"exported {weights} to {tmp_path / 'demo.onnx'}"
    assert np.isfinite(run_onnx(str(tmp_path / "demo.onnx"), torch.rand(1, 3, 96, 96)).numpy()).all()


@pytest.mark.slow
def test_settings_asking_for_more_memory_than_there_is_get_one_line(tmp_path, monkeypatch):
    """export batch=65536 at 640 px asks for 322 GB at its first tensor: refused by the batch-pixel limit (see
    test_cli), and with that limit raised, the failed allocation is one line naming the cause, exit 2."""
    monkeypatch.setenv("DETR_TOOLKIT_MAX_BATCH_PIXELS", str(10**12))
    run = detect("export", "--model", DEMO, "--imgsz", "640", "--batch", "65536", "--file", tmp_path / "big.onnx")
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr[-2000:]
    assert run.stderr.startswith("error: out of memory") and "imgsz= or batch=" in run.stderr
    assert not (tmp_path / "big.onnx").exists()


@pytest.mark.slow
@pytest.mark.parametrize("opset", [16, 17])
def test_opsets_before_18_are_written_as_asked(opset, tmp_path, capsys):
    """torch.export writes opset 18 and up (asked for 16 it printed an onnx traceback and wrote 18): earlier opsets
    go through the TorchScript tracer, said once, and the file holds the opset asked for."""
    model = RTDETR(DEMO)
    file = model.export(opset=opset, dynamic=True, file=tmp_path / "old.onnx")
    out = capsys.readouterr().out
    assert (
        f"opset={opset}: exported with the TorchScript tracer, at a fixed input size" in out and "Traceback" not in out
    )
    graph = onnx.load(file)
    assert [entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx")] == [opset]
    images = torch.rand(2, 3, 96, 96)
    assert max(max_row_error(a, b) for a, b in zip(run_onnx(file, images), run_torch(model, images))) < 1e-4
