"""Every source kind, odd but valid images, and clear errors for bad ones (on a tiny model)."""

from __future__ import annotations

import os
import time
import warnings

import cv2
import numpy as np
import pytest
import torch
from conftest import PHOTOS
from matching import max_row_error
from PIL import Image

from detr_toolkit import RTDETR
from detr_toolkit.errors import SourceError


@pytest.fixture(scope="module")
def model(tiny_weights):
    return RTDETR(tiny_weights)


def predict(model, source, **kwargs):
    return model.predict(source, conf=0.0, verbose=False, **kwargs)


def test_file_dir_glob_and_list(model, tmp_path):
    for photo in PHOTOS:
        (tmp_path / photo.name).write_bytes(photo.read_bytes())
    (tmp_path / "notes.txt").write_text("not an image")
    assert [r.path for r in predict(model, PHOTOS[0])] == [str(PHOTOS[0])]
    by_dir = predict(model, tmp_path)
    assert [r.path for r in by_dir] == sorted(str(tmp_path / p.name) for p in PHOTOS)
    assert len(predict(model, str(tmp_path / "*.jpg"))) == 2
    listed = predict(model, [PHOTOS[1], str(PHOTOS[0])], batch=2)
    assert [r.orig_shape for r in listed] == [cv2.imread(str(p)).shape[:2] for p in (PHOTOS[1], PHOTOS[0])]


def test_in_memory_sources(model):
    bgr = cv2.imread(str(PHOTOS[0]))
    from_numpy = predict(model, bgr)[0]
    from_pil = predict(model, Image.open(PHOTOS[0]))[0]
    assert from_numpy.orig_shape == from_pil.orig_shape == bgr.shape[:2]
    assert from_numpy.path == "image0.jpg"
    assert max_row_error(from_numpy.boxes.data, from_pil.boxes.data) < 1e-3  # PIL decodes the same JPEG
    tensor = torch.rand(2, 3, 128, 96)
    from_tensor = predict(model, tensor)
    assert [r.orig_shape for r in from_tensor] == [(128, 96)] * 2


def test_batch_gives_the_same_detections(model):
    one_by_one = [r.boxes.data for r in predict(model, PHOTOS * 2)]
    batched = [r.boxes.data for r in predict(model, PHOTOS * 2, batch=3)]
    for a, b in zip(one_by_one, batched):
        assert len(a) == len(b) and max_row_error(a, b) < 1e-3


def test_stream_is_lazy(model):
    results = predict(model, PHOTOS, stream=True)
    assert not isinstance(results, list)
    assert next(results).path == str(PHOTOS[0])


def test_video_frame_by_frame(model, tmp_path):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (96, 64))
    for i in range(3):
        writer.write(np.full((64, 96, 3), 60 * i, np.uint8))
    writer.release()
    results = predict(model, path, save=True, project=tmp_path / "runs")
    assert len(results) == 3 and all(r.orig_shape == (64, 96) for r in results)
    assert (tmp_path / "runs" / "predict" / "clip.mp4").stat().st_size > 0


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((1, 1, 3), np.uint8),  # 1x1
        np.random.default_rng(0).integers(0, 255, (50, 40), dtype=np.uint8),  # gray
        np.random.default_rng(0).integers(0, 255, (50, 40, 4), dtype=np.uint8),  # BGRA
        np.random.default_rng(0).integers(0, 65535, (50, 40, 3), dtype=np.uint16),  # 16-bit
    ],
    ids=["1x1", "gray", "rgba", "16bit"],
)
def test_odd_images_from_files_and_arrays(model, tmp_path, image):
    path = tmp_path / "odd.png"
    cv2.imwrite(str(path), image)
    for source in (path, image):
        result = predict(model, source)[0]
        assert result.orig_shape == image.shape[:2]
        assert result.orig_img.dtype == np.uint8 and result.orig_img.shape[2] == 3


def test_exif_rotation_is_applied(model, tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    Image.new("RGB", (80, 40), "red").save(path, exif=exif)
    assert predict(model, path)[0].orig_shape == (80, 40)


def written(path, content: bytes):
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "absent.jpg", "no such file or directory"),
        (lambda d: written(d / "empty.jpg", b""), "empty file"),
        (lambda d: written(d / "bad.jpg", b"not a jpeg at all"), "not a readable image"),
        (lambda d: (d / "sub").mkdir() or d / "sub", "contains no images"),
        (lambda d: str(d / "*.png"), "matches no image"),
    ],
    ids=["missing", "empty", "corrupt", "empty-dir", "glob"],
)
def test_bad_sources_name_the_problem(model, tmp_path, make, message):
    source = make(tmp_path)
    with pytest.raises(SourceError, match=f"{tmp_path}.*{message}"):
        predict(model, source)


def test_bad_tensor_and_offline_url(model):
    with pytest.raises(SourceError, match="0..1"):
        predict(model, torch.full((1, 3, 64, 64), 255.0))
    with pytest.raises(SourceError, match="download failed"):
        predict(model, "http://127.0.0.1:9/image.jpg")


def test_files_that_are_not_files_are_refused_not_waited_on(model, tmp_path):
    """A FIFO named like a video, an image or an exported model would block its reader until a writer comes."""
    from detr_toolkit.errors import CheckpointError

    for name in ("clip.mp4", "photo.jpg", "model.onnx"):
        os.mkfifo(tmp_path / name)
    for name in ("clip.mp4", "photo.jpg"):
        with pytest.raises(SourceError, match=f"{name}: not a regular file"):
            predict(model, tmp_path / name)
    with pytest.raises(CheckpointError, match="model.onnx: not a regular file"):
        RTDETR(tmp_path / "model.onnx")
    with pytest.raises(SourceError, match="matches no image or video"):  # a pattern passes over them
        predict(model, str(tmp_path / "*.jpg"))


def test_a_video_whose_frame_size_changes_says_so(model, tmp_path):
    """Two MPEG-TS streams of different sizes, joined as a stream switching resolution is: OpenCV stretches the later
    frames to the first size without a word; PyAV's key frames show the change, and the user is told."""
    parts = []
    for width, height in ((64, 48), (96, 64)):
        part = tmp_path / f"{width}.ts"
        writer = cv2.VideoWriter(str(part), cv2.VideoWriter_fourcc(*"mp4v"), 10, (width, height))
        for _ in range(10):
            writer.write(np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8))
        writer.release()
        parts.append(part.read_bytes())
    (tmp_path / "switch.ts").write_bytes(b"".join(parts))
    with pytest.warns(UserWarning, match=r"switch\.ts: the frame size changes mid-stream \(64x48 -> 96x64\)"):
        results = predict(model, tmp_path / "switch.ts")
    assert len(results) == 20 and {r.orig_shape for r in results} == {(48, 64)}  # what OpenCV gives
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one size throughout: nothing to say
        assert len(predict(model, tmp_path / "64.ts")) == 10


def test_a_truncated_video_says_how_much_was_read(model, tmp_path):
    """A video cut short gives the frames it holds and a warning naming how many its header promised."""
    writer = cv2.VideoWriter(str(tmp_path / "whole.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(30):
        writer.write(np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8))
    writer.release()
    data = (tmp_path / "whole.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 3])
    with pytest.warns(UserWarning, match=r"cut\.avi: read \d+ of the 30 frames its header promises"):
        assert 1 <= len(predict(model, tmp_path / "cut.avi")) < 30


@pytest.fixture
def server():
    """A local HTTP server replying as the test says: behaviour["reply"] = (headers, body chunks, seconds between)."""
    import http.server
    import threading

    behaviour: dict = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            headers, chunks, delay = behaviour["reply"]
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            for chunk in chunks:
                try:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                except OSError:  # the client gave up
                    return
                time.sleep(delay)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield behaviour, f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_downloads_are_limited_and_stalls_given_up(model, server, tmp_path, monkeypatch):
    """A source URL announcing 400 MB is refused before it is fetched; a server that trickles bytes is given up;
    neither leaves a file (or a .tmp) in the cache."""
    from detr_toolkit.errors import LimitError
    from detr_toolkit.weights import hub

    behaviour, url = server
    monkeypatch.setenv("DETR_TOOLKIT_CACHE", str(tmp_path / "cache"))
    behaviour["reply"] = ({"Content-Length": str(400 << 20)}, [b"x" * 1024], 0)
    with pytest.raises(LimitError, match="big.jpg: the download: 419,430,400 bytes, above the limit"):
        predict(model, f"{url}/big.jpg")
    monkeypatch.setattr(hub, "STALL_SECONDS", 0.5)
    behaviour["reply"] = ({}, [b"x"] * 40, 0.05)  # no length announced, 20 bytes a second
    with pytest.raises(SourceError, match="slow.jpg: the download stalls"):
        predict(model, f"{url}/slow.jpg")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
