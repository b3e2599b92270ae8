"""OpenVINO: `export(format="openvino")` converts the ONNX export to OpenVINO's format, and RTDETR(folder) predicts
and validates through OpenVINO with the detections of the PyTorch model (float32), in bfloat16 with half=True, and
in int8 from a calibrated export."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import PHOTOS, detect
from test_onnx_model import assert_predicts_and_validates_as, assert_same_detections

from detr_toolkit import RTDETR
from detr_toolkit.data.synthetic import make_synthetic
from detr_toolkit.engine.openvino_model import OpenVinoModel
from detr_toolkit.engine.predictor import inference_dtype
from detr_toolkit.engine.signal_stack import current_signal_stack
from detr_toolkit.errors import CheckpointError, ConfigError

DEMO = Path(__file__).parent.parent / "assets" / "rtdetr-tiny-shapes.safetensors"
SHAPES = Path(__file__).parent.parent / "assets" / "shapes.jpg"


@pytest.fixture(scope="module")
def demo_openvino(tmp_path_factory) -> Path:
    return Path(RTDETR(DEMO).export(format="openvino", dynamic=True, file=tmp_path_factory.mktemp("ov") / "demo"))


@pytest.mark.slow
def test_openvino_export_predicts_and_validates_as_pytorch(demo_openvino, tmp_path):
    # the folder, written whole: graph, weights and metadata, nothing left beside it
    assert sorted(p.name for p in demo_openvino.iterdir()) == ["demo.bin", "demo.xml", "metadata.yaml"]
    assert [p.name for p in demo_openvino.parent.iterdir()] == ["demo"]
    metadata = yaml.safe_load((demo_openvino / "metadata.yaml").read_text())
    torch_model = RTDETR(DEMO)
    assert metadata["names"] == torch_model.names and metadata["stride"] == 32 and metadata["imgsz"] == [96, 96]
    for source in (demo_openvino, demo_openvino / "demo.xml"):  # the folder or its graph
        exported = RTDETR(source)
        assert exported.names == torch_model.names and exported.exported.runtime == "OpenVINO"
        assert exported.exported.imgsz is None and exported.exported.batch is None  # dynamic: any size and batch
    # (OpenVINO's float32 kernels round otherwise than onnxruntime's: a near-tied pair may swap)
    assert_predicts_and_validates_as(exported, torch_model, tmp_path, metric=1e-4)


@pytest.mark.slow
def test_half_computes_as_pytorch_half_does(demo_openvino):
    """half=True: bfloat16 where the CPU has native bf16 (as the PyTorch model's half=True), float32 elsewhere."""
    exported = RTDETR(demo_openvino)
    half = exported.predict(SHAPES, conf=0.1, half=True)
    assert exported.exported.dtype == inference_dtype(torch.device("cpu"), True)
    assert exported.exported.precision == ("bf16" if exported.exported.dtype == torch.bfloat16 else "f32")
    assert_same_detections(half, RTDETR(DEMO).predict(SHAPES, conf=0.1), box_px=2.0, score=0.02)
    exported.predict(SHAPES)
    assert exported.exported.precision == "f32"  # half=False again: float32 again


@pytest.mark.slow
def test_the_threads_signal_stack_outlives_openvino_models(demo_openvino):
    """OpenVINO's CPU plugin points the thread's alternate signal stack at memory it frees with the model; left so,
    the next Python signal handler (a DataLoader worker's SIGCHLD) crashed the process. It is put back."""
    import gc

    before = current_signal_stack()
    exported = RTDETR(demo_openvino)
    exported.predict(SHAPES, half=True)  # a second compiled model, in bfloat16 where the CPU has it
    del exported
    gc.collect()
    after = current_signal_stack()
    assert (after.ss_sp, after.ss_size, after.ss_flags) == (before.ss_sp, before.ss_size, before.ss_flags)


@pytest.mark.slow
def test_int8_openvino_export_keeps_the_accuracy_of_float32(tmp_path, capsys):
    data = make_synthetic(tmp_path / "shapes", train=32, val=80, seed=11)
    folder = RTDETR(DEMO).export(format="openvino", int8=True, data=data, file=tmp_path / "demo_openvino_model")
    assert Path(folder) == tmp_path / "demo-int8_openvino_model" and (tmp_path / "demo_openvino_model").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-int8_openvino_model", "demo_openvino_model", "shapes"]
    assert "mAP50-95 int8 " in capsys.readouterr().out
    graph = (Path(folder) / "demo-int8.xml").read_text()
    assert 'element_type="i8"' in graph  # int8 weights
    ours = RTDETR(folder).val(data, verbose=False)["metrics"]
    theirs = RTDETR(tmp_path / "demo_openvino_model").val(data, verbose=False)["metrics"]
    assert theirs["mAP50-95"] > 0.6
    # within 0.01 on CPUs with VNNI; on an AVX2-only AMD EPYC OpenVINO's int8 kernels lose more (mAP50-95 0.730 vs
    # 0.740, mAP50 0.917 vs 0.935; the same int8 file in onnxruntime: 0.740, 0.932)
    for key in ("mAP50-95", "mAP50"):
        assert abs(ours[key] - theirs[key]) < 0.025, (key, ours[key], theirs[key])


@pytest.mark.slow
def test_ultralytics_own_openvino_export_predicts_as_ultralytics(ultralytics_l, tmp_path):
    """ultralytics' OpenVINO folder (its ONNX graph converted, metadata.yaml with its names) gives the detections
    ultralytics' own predict gives on that folder (see the ONNX test for why not those of its PyTorch predict)."""
    from ultralytics import RTDETR as UltralyticsRTDETR

    copy = tmp_path / "rtdetr-l.pt"
    copy.write_bytes(ultralytics_l.read_bytes())
    folder = UltralyticsRTDETR(str(copy)).export(format="openvino", imgsz=640)
    assert Path(folder).name == "rtdetr-l_openvino_model"
    theirs = UltralyticsRTDETR(folder).predict([str(p) for p in PHOTOS], conf=0.25, verbose=False)
    exported = RTDETR(folder)
    assert exported.names == theirs[0].names and exported.exported.imgsz == (640, 640)
    assert_same_detections(exported.predict(PHOTOS, conf=0.25), theirs)


@pytest.mark.slow
def test_cli_exports_next_to_the_checkpoint_and_predicts(tmp_path):
    checkpoint = tmp_path / "best.safetensors"
    checkpoint.write_bytes(DEMO.read_bytes())
    run = detect("export", "--model", checkpoint, "--format", "openvino")
    assert run.returncode == 0, run.stderr
    folder = tmp_path / "best_openvino_model"
    assert (folder / "best.xml").is_file() and (folder / "best.bin").is_file()
    run = detect("predict", SHAPES, "--model", folder, "--conf", "0.5", "--project", tmp_path, "--save")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("shapes.jpg: 96x96 ") and (tmp_path / "predict" / "shapes.jpg").is_file()
    run = detect("export", "--model", checkpoint, "--format", "openvino")  # again: the folder is replaced whole
    assert run.returncode == 0 and sorted(p.name for p in folder.iterdir()) == ["best.bin", "best.xml", "metadata.yaml"]


@pytest.mark.slow
def test_bad_openvino_inputs_get_one_line_errors(demo_openvino, tmp_path):
    fixed = Path(RTDETR(DEMO).export(format="openvino", file=tmp_path / "fixed_openvino_model"))
    with pytest.raises(ConfigError, match=r"imgsz=128: .*fixed_openvino_model was exported for 96x96 inputs"):
        RTDETR(fixed).predict(SHAPES, imgsz=128)
    with pytest.raises(ConfigError, match="OpenVINO models run on the CPU here"):
        OpenVinoModel(fixed, torch.device("cuda"))  # (RTDETR(..., device="cuda") asks for a GPU first)
    # a folder without its metadata, a broken graph, two graphs in one folder
    lost = tmp_path / "lost_openvino_model"
    lost.mkdir()
    for name in ("demo.xml", "demo.bin"):
        (lost / name).write_bytes((demo_openvino / name).read_bytes())
    with pytest.raises(CheckpointError, match="lost_openvino_model: no metadata.yaml beside the graph"):
        RTDETR(lost)
    (lost / "metadata.yaml").write_bytes((demo_openvino / "metadata.yaml").read_bytes())
    (lost / "demo.xml").write_text("<net><layers>")
    with pytest.raises(CheckpointError, match=r"demo.xml: not a model OpenVINO can run"):
        RTDETR(lost)
    (lost / "other.xml").write_text("<net/>")
    with pytest.raises(
        CheckpointError, match="lost_openvino_model: an OpenVINO folder holds one .xml graph, this one 2"
    ):
        RTDETR(lost)
    # metadata of another kind of model
    (fixed / "metadata.yaml").write_text(yaml.safe_dump({"names": {0: "a"}, "head": "Detect", "task": "detect"}))
    with pytest.raises(CheckpointError, match="an ultralytics model with a Detect head"):
        RTDETR(fixed)
    for action in (RTDETR(demo_openvino).train, RTDETR(demo_openvino).export):
        with pytest.raises(ConfigError, match="an exported model predicts, tracks and validates only"):
            action()
    run = detect("predict", SHAPES, "--model", lost)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "lost_openvino_model" in run.stderr


def test_metadata_yaml_is_read_within_the_yaml_limits(demo_openvino, tmp_path):
    """metadata.yaml is read as our YAML files are: an alias bomb or a file of megabytes gets one line."""
    import shutil

    from test_onnx_model import alias_bomb

    folder = Path(shutil.copytree(demo_openvino, tmp_path / "hostile_openvino_model"))
    original = yaml.safe_load((folder / "metadata.yaml").read_text())
    for text, message in [
        (alias_bomb(), "YAML nodes, aliases expanded, above the limit"),
        ("# padding\n" * 600_000, "bytes, above the limit"),
        (yaml.safe_dump({**original, "stride": "0"}), "its stride '0' in its metadata is not an integer"),
    ]:
        (folder / "metadata.yaml").write_text(text)
        with pytest.raises(CheckpointError, match=re.escape(message)) as error:
            RTDETR(folder)
        assert "\n" not in str(error.value)


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_folder(tmp_path):
    """OpenVINO's writer meets a full disk (here: a file-size limit, as real as ENOSPC to the writer): one
    OutputError naming the folder, nothing left behind (a `basic_ios::clear` traceback before)."""
    import subprocess
    import sys
    import textwrap

    onnx_file = RTDETR(DEMO).export(file=tmp_path / "demo.onnx")
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from detr_toolkit.engine.exporter import export_openvino
        from detr_toolkit.errors import OutputError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        try:
            export_openvino({str(onnx_file)!r}, {str(tmp_path / "demo_openvino_model")!r})
        except OutputError as error:
            sys.exit(f"OutputError: {{error}}")
    """)
    run = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    message = f"OutputError: {tmp_path / 'demo_openvino_model'}: cannot write the OpenVINO model ("
    assert run.returncode == 1 and run.stderr.startswith(message) and "MB free on its disk)" in run.stderr, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.onnx"]
