"""Exported models predict: RTDETR("model.onnx") runs predict, val and the CLI through onnxruntime, with the same
Results as the PyTorch model it was exported from (and as ultralytics' predict, for ultralytics' own export)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import PHOTOS, detect
from matching import match_detections

from detr_toolkit import RTDETR
from detr_toolkit.data.synthetic import make_synthetic
from detr_toolkit.errors import CheckpointError, ConfigError

DEMO = Path(__file__).parent.parent / "assets" / "rtdetr-tiny-shapes.safetensors"
SHAPES = Path(__file__).parent.parent / "assets" / "shapes.jpg"


def assert_same_detections(ours, theirs, box_px: float = 0.05, score: float = 1e-4) -> None:
    """Two lists of Results hold the same detections: each one scored clear of the cut (conf or max_det, plus a
    margin) pairs with one of the same class in the other list whose box corners are within `box_px` pixels and
    score within `score`. (Near the cut, rounding may swap which of two near-tied detections is kept, or leave a
    detection just above the cut on one side and just below it on the other.)"""
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        a, b = a.boxes.data.numpy(), b.boxes.data.numpy()
        assert len(a) > 0 and len(b) > 0
        cut = min(a[:, 4].min(), b[:, 4].min()) + 10 * score
        for clear, other in ((a[a[:, 4] > cut + score], b[b[:, 4] > cut - score]),
                             (b[b[:, 4] > cut + score], a[a[:, 4] > cut - score])):  # fmt: skip
            assert len(other) >= len(clear) > 0
            paired_clear, paired_other = match_detections(clear, other)
            assert (paired_clear[:, 5] == paired_other[:, 5]).all()
            assert np.abs(paired_clear[:, :4] - paired_other[:, :4]).max() <= box_px
            assert np.abs(paired_clear[:, 4] - paired_other[:, 4]).max() <= score


def assert_predicts_and_validates_as(
    exported: RTDETR, torch_model: RTDETR, tmp_path: Path, metric: float = 1e-6
) -> None:
    """An exported file of the demo model gives the PyTorch model's detections at two input sizes, batched, and
    its val metrics (within `metric`)."""
    sources = [SHAPES, *PHOTOS]
    for imgsz in (96, 160):
        assert_same_detections(exported.predict(sources, conf=0.1, batch=2, imgsz=imgsz),
                               torch_model.predict(sources, conf=0.1, imgsz=imgsz))  # fmt: skip
    data = make_synthetic(tmp_path / "shapes", train=1, val=24, seed=3)
    ours, theirs = exported.val(data, verbose=False)["metrics"], torch_model.val(data, verbose=False)["metrics"]
    assert theirs["mAP50"] > 0.5  # a model that detects, so that agreement means something
    assert all(abs(ours[key] - theirs[key]) < metric for key in ("mAP50-95", "mAP50", "mAP75", "AR100"))


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory) -> Path:
    return Path(RTDETR(DEMO).export(dynamic=True, file=tmp_path_factory.mktemp("onnx") / "demo.onnx"))


@pytest.mark.slow
def test_exported_demo_model_predicts_and_validates_as_pytorch(demo_onnx, tmp_path):
    torch_model, exported = RTDETR(DEMO), RTDETR(demo_onnx)
    # dynamic: any batch, and any input size (the decoder's anchors are computed in the graph)
    assert exported.names == torch_model.names and exported.exported.batch is None and exported.exported.imgsz is None
    assert_predicts_and_validates_as(exported, torch_model, tmp_path)


@pytest.mark.slow
def test_fixed_batch_file_runs_any_number_of_images(tmp_path):
    """A file exported with batch=2 (not dynamic) runs 3 images in two chunks, the last one padded."""
    file = RTDETR(DEMO).export(batch=2, file=tmp_path / "batch2.onnx")
    exported = RTDETR(file)
    assert exported.exported.batch == 2 and exported.exported.imgsz == (96, 96)
    sources = [SHAPES, *PHOTOS]
    assert_same_detections(exported.predict(sources, batch=3, conf=0.1), RTDETR(DEMO).predict(sources, conf=0.1))


@pytest.mark.slow
def test_ultralytics_own_onnx_export_predicts_as_ultralytics(ultralytics_l, tmp_path):
    """ultralytics' RT-DETR export (from 8.4 on: the top (query, class) pairs, picked in the graph) gives the
    detections ultralytics' own predict gives on that file. (Not those of its PyTorch predict, which keeps one class
    per query: the export may keep a query twice, with two classes above conf.)"""
    from ultralytics import RTDETR as UltralyticsRTDETR

    copy = tmp_path / "rtdetr-l.pt"
    copy.write_bytes(ultralytics_l.read_bytes())
    file = UltralyticsRTDETR(str(copy)).export(format="onnx", imgsz=640)
    theirs = UltralyticsRTDETR(file).predict([str(p) for p in PHOTOS], conf=0.25, verbose=False)
    ours = RTDETR(file).predict(PHOTOS, conf=0.25)
    assert_same_detections(ours, theirs)


@pytest.mark.slow
def test_cli_predicts_and_validates_with_an_onnx_file(demo_onnx, tmp_path):
    run = detect("predict", SHAPES, "--model", demo_onnx, "--conf", "0.5", "--project", tmp_path, "--save")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("shapes.jpg: 96x96 ") and (tmp_path / "predict" / "shapes.jpg").is_file()
    data = make_synthetic(tmp_path / "shapes", train=1, val=4)
    run = detect("val", "--model", demo_onnx, "--data", data)
    assert run.returncode == 0 and "mAP50-95" in run.stdout, run.stderr


@pytest.mark.slow
def test_bad_onnx_inputs_get_one_line_errors(demo_onnx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where ultralytics writes its export
    # a file that is not ONNX
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x01 not a protobuf")
    with pytest.raises(CheckpointError, match="garbage.onnx: not a model onnxruntime can run"):
        RTDETR(garbage)
    # an ONNX model of another kind: a YOLO detector's (B, 4 + classes, anchors) output
    from ultralytics import YOLO

    yolo = YOLO("yolov8n.yaml").export(format="onnx", imgsz=64)
    with pytest.raises(CheckpointError, match="not an RT-DETR layout"):
        RTDETR(yolo)
    # an ONNX model without our metadata
    plain = onnx.load(demo_onnx)
    del plain.metadata_props[:]
    onnx.save(plain, tmp_path / "plain.onnx")
    with pytest.raises(CheckpointError, match="plain.onnx: not a detector exported by detr-toolkit or ultralytics"):
        RTDETR(tmp_path / "plain.onnx")
    # a size the file was not exported for, and what an exported file cannot do
    fixed = RTDETR(RTDETR(DEMO).export(file=tmp_path / "fixed.onnx"))
    with pytest.raises(ConfigError, match=r"imgsz=128: .*fixed.onnx was exported for 96x96 inputs"):
        fixed.predict(SHAPES, imgsz=128)
    with pytest.raises(ConfigError, match=r"fixed.onnx: was exported for 96x96 inputs, given 128x128"):
        fixed.predict(torch.rand(1, 3, 128, 128))
    for action in (fixed.train, fixed.export, fixed.info):
        with pytest.raises(ConfigError, match="an exported model predicts, tracks and validates only"):
            action()
    run = detect("predict", SHAPES, "--model", tmp_path / "plain.onnx")
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "plain.onnx" in run.stderr
    run = detect("predict", SHAPES, "--model", tmp_path / "fixed.onnx", "--imgsz", "128")
    assert run.returncode == 2 and "exported for 96x96" in run.stderr


def with_metadata(source: Path, target: Path, **changes: str | None) -> Path:
    """A copy of the ONNX file `source` at `target` with metadata entries changed (None: removed)."""
    model = onnx.load(source)
    metadata = {p.key: p.value for p in model.metadata_props} | changes
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {k: v for k, v in metadata.items() if v is not None})
    onnx.save(model, target)
    return target


def alias_bomb(levels: int = 9) -> str:
    """YAML of a few hundred bytes whose aliases expand to 10 ** levels nodes."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE_METADATA = {  # metadata entry -> (value, what the one-line error says)
    "stride 0": ("stride", "0", "its stride '0' in its metadata is not an integer in 1..1024"),
    "stride text": ("stride", "thirty-two", "its stride 'thirty-two'"),
    "stride 5000 digits": ("stride", "9" * 5000, "is not an integer in 1..1024"),
    "config malformed": ("config", "decoder: [type: rtdetr", "the config in its metadata: malformed YAML"),
    "config a list": ("config", "- decoder\n- type", "the config in its metadata: expected a mapping"),
    "config without decoder": ("config", "nc: 4\n", "names no decoder type we know"),
    "config python tag": ("config", "decoder: !!python/object/apply:os.system [echo hi]", "malformed YAML"),
    "config alias bomb": ("config", alias_bomb(), "YAML nodes, aliases expanded, above the limit"),
    "imgsz 0": ("config", "decoder: {type: rtdetr}\nimgsz: 0\n", "its config's imgsz '0'"),
    "imgsz negative": ("config", "decoder: {type: rtdetr}\nimgsz: -96\n", "its config's imgsz '-96'"),
    "imgsz text": ("config", "decoder: {type: rtdetr}\nimgsz: large\n", "its config's imgsz 'large'"),
    "imgsz 2^30": ("config", "decoder: {type: rtdetr}\nimgsz: 1073741824\n", "is not an integer in 1..4096"),
    "imgsz off stride": ("config", "decoder: {type: rtdetr}\nimgsz: 100\n", "imgsz 100 is not a multiple of"),
    "names a number": ("names", "42", "unreadable class names"),
    "names 200000 deep": ("names", "[" * 200_000 + "]" * 200_000, "unreadable class names"),
    "names negative keys": ("names", "{-1: 'a', 0: 'b', 1: 'c', 2: 'd'}", "names must name exactly the classes"),
    "names sparse keys": ("names", "{0: 'a', 1: 'b', 2: 'c', 7: 'd'}", "names must name exactly the classes"),
    "names a million": ("names", repr({i: f"class {i}" for i in range(1_000_000)}), "above the limit"),
}


@pytest.mark.parametrize("case", list(HOSTILE_METADATA))
def test_exported_metadata_is_validated_as_checkpoints_are(case, demo_onnx, tmp_path):
    """An ONNX file's metadata (stride, config, class names) gets the checks and limits our checkpoints' configs
    get: one line naming the file and the entry, never a traceback or an allocation it asks for."""
    key, value, message = HOSTILE_METADATA[case]
    file = with_metadata(demo_onnx, tmp_path / "hostile.onnx", **{key: value})
    with pytest.raises(CheckpointError, match=re.escape(message)) as error:
        RTDETR(file).predict(SHAPES, verbose=False)
    assert "hostile.onnx" in str(error.value) and "\n" not in str(error.value)


def test_graphs_of_another_input_are_refused(tmp_path):
    """A graph taking 1 channel, or float16 images, or a fixed size off its stride: refused when it is opened."""
    from onnx import TensorProto, helper

    def graph(name: str, shape: list, dtype: int = TensorProto.FLOAT) -> Path:
        image = helper.make_tensor_value_info("images", dtype, shape)
        rows = helper.make_tensor_value_info("output0", dtype, [shape[0], 300, 8])
        node = helper.make_node("ReduceMean", ["images"], ["pooled"], axes=[1, 2, 3], keepdims=0)
        expand = helper.make_node("Expand", ["pooled_3d", "shape"], ["output0"])
        reshape = helper.make_node("Reshape", ["pooled", "three"], ["pooled_3d"])
        constants = [helper.make_tensor("three", TensorProto.INT64, [3], [-1, 1, 1]),
                     helper.make_tensor("shape", TensorProto.INT64, [3], [shape[0], 300, 8])]  # fmt: skip
        model = helper.make_model(helper.make_graph([node, reshape, expand], "g", [image], [rows], constants),
                                  opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
        model.ir_version = 8
        helper.set_model_props(model, {"names": "{0: 'a', 1: 'b', 2: 'c', 3: 'd'}", "stride": "32"})
        onnx.save(model, tmp_path / name)
        return tmp_path / name

    for file, message in [
        (graph("gray.onnx", [1, 1, 96, 96]), "takes images of 1 channels, not 3"),
        (graph("half.onnx", [1, 3, 96, 96], TensorProto.FLOAT16), "takes tensor(float16) images"),
        (graph("odd.onnx", [1, 3, 100, 100]), "takes 100x100 images, not a multiple of its stride 32"),
    ]:
        with pytest.raises(CheckpointError, match=re.escape(message)):
            RTDETR(file)
