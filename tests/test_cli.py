"""The `detect` command as a user runs it: output lines, saved runs, one-line errors with exit status 2."""

from __future__ import annotations

import re

import pytest
from conftest import ASSETS, PHOTOS, detect

from detr_toolkit.cli import main


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "absent.jpg"], "absent.jpg: no such file or directory"),
        (["predict", PHOTOS[0], "--conf", "1.5"], "conf=1.5: must be within 0..1"),
        (["predict", PHOTOS[0], "--imgsz", "100"], "imgsz=100: must be a multiple of 32 for this model"),
        (["predict"], "predict needs a SOURCE (an image, video, directory, glob or URL)"),
        (["export", "--format", "tflite"], "format='tflite': must be one of onnx, openvino"),
        (["export", "--imgsz", "100"], "imgsz=100: must be a multiple of 32 for this model"),
    ],
)
def test_user_errors_are_one_line_with_status_2(args, message, tiny_weights):
    run = detect(*args, "--model", tiny_weights)
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {message}"
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_bad_checkpoints_are_one_line_with_status_2(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00" * 64)
    for model, message in [(corrupt, "not a PyTorch checkpoint"), (tmp_path / "absent.pt", "no such checkpoint file")]:
        run = detect("predict", PHOTOS[0], "--model", model)
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_unknown_options_and_debug(tiny_weights):
    unknown = detect("predict", PHOTOS[0], "colour=red")
    assert unknown.returncode == 2 and "unrecognised argument 'colour=red'" in unknown.stderr
    debug = detect("--debug", "predict", "absent.jpg", "--model", tiny_weights)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


@pytest.mark.slow
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
    # Every name we know, ours or the official file's, says where its file goes; roboflow's files keep its names.
    files = {name: hub.official_file(name) for name in hub.OFFICIAL_WEIGHTS}
    assert len(set(files.values())) == len(files) and files["rf-detr-nano.pth"].name == "rf-detr-nano.pth"
    assert files["rtdetrv2-s.pth"].name == "rtdetrv2_r18vd_120e_coco_rerun_48.1.pth"
    for name, url in list(hub.OFFICIAL_WEIGHTS.items()):
        monkeypatch.setitem(hub.OFFICIAL_WEIGHTS, name, "http://127.0.0.1:9/" + url.split("://")[1])
        for spelling in {name, files[name].name}:
            with pytest.raises(CheckpointError, match=f"put it at {re.escape(str(files[name]))}"):
                hub.resolve_weights(spelling)


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", PHOTOS[0], "conf=2"], "conf=2: must be within 0..1"),
        (["predict", PHOTOS[0], "iou=-1"], "iou=-1: must be within 0..1"),
        (["predict", PHOTOS[0], "imgsz=0"], "imgsz=0: must be at least 1"),
        (["predict", PHOTOS[0], "--imgsz", "abc"], "imgsz='abc': must be an integer"),
        (["predict", PHOTOS[0], "max_det=2.5"], "max_det='2.5': must be an integer"),
        (["predict", PHOTOS[0], "save=maybe"], "save='maybe': must be true or false"),
        (["predict", PHOTOS[0], "classes=[0, x]"], "classes[1]='x': must be an integer"),
        (
            ["predict", PHOTOS[0], "imgsz=99999"],
            "imgsz=99999: 99,999 pixels a side, above the limit of 4,096 (set DETR_TOOLKIT_MAX_IMAGE_SIZE to raise it)",
        ),
        (["train", "--data", "d.yaml", "epochs=abc"], "epochs='abc': must be an integer"),
        (["train", "--data", "d.yaml", "ema_decay=1.5"], "ema_decay=1.5: must be at least 0 and below 1"),
        (["train", "--data", "d.yaml", "lr=0"], "lr=0: must be above 0"),
        (["train", "--data", "d.yaml", "schedule=fast"], "schedule='fast': must be one of cosine, linear, constant"),
        (["val", "--data", "d.yaml", "max_images=-1"], "max_images=-1: must be at least 1"),
        (["export", "opset=11"], "opset=11: must be within 16..23"),
        (["predict", PHOTOS[0], "--bogus"], "unrecognised arguments: --bogus"),
    ],
)
def test_every_setting_is_validated_with_its_name_and_range(args, message, tiny_weights, capsys):
    """Settings errors name the setting and what it allows, in one line, before any model or data is read."""
    assert main([*map(str, args), "--model", str(tiny_weights)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


@pytest.mark.slow
def test_a_batch_too_large_for_memory_is_refused_before_allocating(tmp_path, tiny_weights, capsys):
    """batch x imgsz^2 against a limit that names itself (an allocation traceback, or the OOM killer, before)."""
    from detr_toolkit.data.synthetic import make_synthetic

    data = make_synthetic(tmp_path / "shapes", train=4, val=2, size=64)
    limit = "pixels in a batch, above the limit of 134,217,728 (set DETR_TOOLKIT_MAX_BATCH_PIXELS to raise it)"
    for args, asked in [
        (["predict", PHOTOS[0], "batch=65536", "imgsz=640"], "batch=65536 at imgsz=640: 26,843,545,600"),
        (["val", "--data", data, "batch=9", "imgsz=4096"], "batch=9 at imgsz=4096: 150,994,944"),
        (["export", f"file={tmp_path / 'm.onnx'}", "batch=65536"], "batch=65536 at imgsz=128: 1,073,741,824"),
        (["train", "--data", data, "batch=2", "imgsz=64", "multi_scale=[64, 9216]"], None),
        (["train", "--data", data, "batch=16", "imgsz=4096", f"project={tmp_path}"], "batch=16 at imgsz=4096: 268,"),
    ]:
        assert main([*map(str, args), "--model", str(tiny_weights)]) == 2
        err = capsys.readouterr().err
        if asked is None:  # a multi_scale size above the side limit is named as such
            assert "multi_scale" in err and "DETR_TOOLKIT_MAX_IMAGE_SIZE" in err, err
        else:
            assert err.startswith(f"error: {asked}") and limit in err, err
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "exp").exists()


def test_numbers_in_yaml_spelling_are_numbers(tmp_path, tiny_weights, capsys):
    """YAML reads `1e-4` as text (it wants a dot): settings from key=value, --options and cfg files are numbers."""
    from detr_toolkit.settings import TrainArgs

    cfg = tmp_path / "train.yaml"
    cfg.write_text("lr: 1e-4\nlr_backbone: 1E-5\nepochs: '3'\nmulti_scale: [64, 96]\n")
    args = TrainArgs.from_sources(cfg, data="d.yaml", weight_decay="5e-2")
    assert (args.lr, args.lr_backbone, args.epochs, args.multi_scale, args.weight_decay) == (
        1e-4,
        1e-5,
        3,
        [64, 96],
        0.05,
    )
    assert args.given == {"lr", "lr_backbone", "epochs", "multi_scale", "data", "weight_decay"}
    assert main(["predict", str(PHOTOS[0]), "--model", str(tiny_weights), "conf=1e-3", "--max-det", "2"]) == 0
    assert "bus.jpg: 128x128 " in capsys.readouterr().out


@pytest.mark.slow
def test_native_libraries_add_no_lines_to_an_error(tmp_path):
    """libpng prints its own warning and error for a PNG whose header says it is 0 pixels wide; the command still
    says what is wrong in one line (with --debug, everything is shown)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    image = tmp_path / "zero-width.png"
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0))
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    run = detect("predict", image, "--model", ASSETS / "rtdetr-tiny-shapes.safetensors")
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"error: {image}: not a readable image (corrupt or unsupported format)"]
    debug = detect("--debug", "predict", image, "--model", ASSETS / "rtdetr-tiny-shapes.safetensors")
    assert "libpng" in debug.stderr and "Traceback" in debug.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rt_detr_v2_discrete", "d_fine", "deimv2_dinov3"])
def test_every_family_predicts_and_validates_from_the_cli(kind, tmp_path):
    """The new families through the same commands: a transformers folder predicts the photos (its class names
    printed, as the peer's post-processing finds them at conf 0.1) and validates on a small COCO set."""
    import peers
    import torch

    from detr_toolkit.data.synthetic import make_synthetic

    model, size = peers.transformers_model(kind, nc=4)  # the synthetic set's class count, for val
    model.save_pretrained(tmp_path / kind)
    run = detect("predict", PHOTOS[0], "--model", tmp_path / kind, "--imgsz", size, "--conf", "0.1")
    assert run.returncode == 0, run.stderr
    images = peers.photos(size)[:1]
    with torch.inference_mode():
        outputs = model(pixel_values=peers.pixel_values(kind, images))
    expected = peers.image_processor(kind).post_process_object_detection(outputs, threshold=0.1)[0]
    counts = {f"class{c}": int((expected["labels"] == c).sum()) for c in expected["labels"].unique().tolist()}
    assert counts and all(f"{n} {name}" in run.stdout for name, n in counts.items()), (run.stdout, counts)
    data = make_synthetic(tmp_path / "shapes", train=1, val=2, size=size, max_objects=2)
    val = detect("val", "--model", tmp_path / kind, "--data", data.parent / "coco.yaml", "--imgsz", size)
    assert val.returncode == 0 and "mAP50-95" in val.stdout, val.stderr
