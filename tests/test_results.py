"""Results/Boxes against ultralytics' own classes on the same detections."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import PHOTOS

from detr_toolkit import Boxes, Results

NAMES = {0: "person", 1: "bus", 2: "dog"}


@pytest.fixture()
def detections() -> torch.Tensor:
    return torch.tensor(
        [[10.0, 20.0, 110.0, 220.0, 0.9, 0.0], [50.5, 60.0, 300.0, 400.25, 0.6, 1.0], [0.0, 0.0, 5.0, 5.0, 0.3, 0.0]]
    )


def peer_results(image, detections):
    from ultralytics.engine.results import Results as PeerResults

    return PeerResults(image, path=str(PHOTOS[0]), names=NAMES, boxes=detections.clone())


def test_boxes_match_ultralytics(detections):
    image = cv2.imread(str(PHOTOS[0]))
    ours, theirs = Results(image, str(PHOTOS[0]), NAMES, detections.clone()), peer_results(image, detections)
    for attribute in ("xyxy", "xywh", "xyxyn", "xywhn", "conf", "cls", "data"):
        assert torch.allclose(getattr(ours.boxes, attribute), getattr(theirs.boxes, attribute)), attribute
        numpy_value = getattr(ours.boxes.numpy(), attribute)
        assert isinstance(numpy_value, np.ndarray)
        assert np.allclose(numpy_value, getattr(theirs.boxes.numpy(), attribute)), attribute
    assert ours.boxes.orig_shape == theirs.boxes.orig_shape and ours.orig_shape == theirs.orig_shape
    assert len(ours) == len(theirs) == 3
    assert ours.verbose() == theirs.verbose()
    assert len(ours[0:2]) == 2 and torch.equal(ours[1].boxes.data, theirs[1].boxes.data)


def test_summary_and_json_match_ultralytics(detections):
    image = cv2.imread(str(PHOTOS[0]))
    ours, theirs = Results(image, str(PHOTOS[0]), NAMES, detections.clone()), peer_results(image, detections)
    for normalize in (False, True):
        mine, peer = ours.summary(normalize=normalize), theirs.summary(normalize=normalize)
        assert [(d["name"], d["class"], d["box"]) for d in mine] == [(d["name"], d["class"], d["box"]) for d in peer]
        assert [d["confidence"] for d in mine] == pytest.approx([d["confidence"] for d in peer])
    assert json.loads(ours.to_json())[1]["name"] == "bus"


def test_save_txt_matches_ultralytics(tmp_path, detections):
    image = cv2.imread(str(PHOTOS[0]))
    ours, theirs = Results(image, str(PHOTOS[0]), NAMES, detections.clone()), peer_results(image, detections)
    for save_conf in (False, True):
        ours.save_txt(tmp_path / f"ours{save_conf}.txt", save_conf=save_conf)
        theirs.save_txt(tmp_path / f"theirs{save_conf}.txt", save_conf=save_conf)
        mine = np.loadtxt(tmp_path / f"ours{save_conf}.txt")
        peer = np.loadtxt(tmp_path / f"theirs{save_conf}.txt")
        assert mine.shape == peer.shape and np.allclose(np.sort(mine, 0), np.sort(peer, 0), atol=1e-5)


def test_plot_and_save(tmp_path, detections):
    image = cv2.imread(str(PHOTOS[0]))
    result = Results(image, str(PHOTOS[0]), NAMES, detections)
    plotted = result.plot()
    assert plotted.shape == image.shape and not np.array_equal(plotted, image)
    assert np.array_equal(result.orig_img, image), "plot must draw on a copy"
    assert np.array_equal(result.plot(boxes=False), image)
    saved = cv2.imread(result.save(tmp_path / "out.png"))
    assert np.array_equal(saved, plotted)


def test_empty_results_and_conversions():
    image = np.zeros((20, 30, 3), np.uint8)
    empty = Results(image, "x.jpg", NAMES)
    assert len(empty) == 0 and empty.summary() == [] and empty.verbose() == "(no detections), "
    boxes = Boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.5, 2.0]]), (20, 30))
    assert isinstance(boxes.numpy().data, np.ndarray) and boxes.numpy().to("cpu").data.dtype == torch.float32
    with pytest.raises(ValueError):
        Boxes(torch.zeros(3, 5), (20, 30))


def test_ultralytics_attributes_of_a_detection_result(detections):
    """What ultralytics' clients read: the other tasks' attributes are None, boxes are untracked, slices are Results."""
    image = cv2.imread(str(PHOTOS[0]))
    ours, theirs = Results(image, str(PHOTOS[0]), NAMES, detections.clone()), peer_results(image, detections)
    for attribute in ("masks", "probs", "keypoints", "obb"):
        assert getattr(ours, attribute) is None and getattr(theirs, attribute) is None, attribute
    assert ours.boxes.id is None and ours.boxes.is_track is False and theirs.boxes.is_track is False
    head = ours[:2]
    assert isinstance(head, Results) and len(head) == 2 and torch.equal(head.boxes.data, theirs[:2].boxes.data)
    empty = ours.new()
    assert len(empty) == 0 and empty.path == ours.path and empty.names is ours.names and empty.speed is ours.speed
    moved = ours.numpy()
    assert isinstance(moved.boxes.data, np.ndarray) and np.allclose(moved.boxes.xyxy, theirs.numpy().boxes.xyxy)


def test_tracked_boxes_match_ultralytics(detections):
    """(N, 7) boxes carry track ids before the confidence; summary, labels and plots show them as ultralytics does."""
    image = cv2.imread(str(PHOTOS[0]))
    tracked = torch.cat([detections[:, :4], torch.tensor([[7.0], [3.0], [12.0]]), detections[:, 4:]], 1)
    ours, theirs = Results(image, str(PHOTOS[0]), NAMES, tracked.clone()), peer_results(image, tracked)
    assert ours.boxes.is_track and theirs.boxes.is_track
    for attribute in ("id", "conf", "cls", "xyxy", "xywhn"):
        assert torch.equal(getattr(ours.boxes, attribute), getattr(theirs.boxes, attribute)), attribute
    assert [r["track_id"] for r in ours.summary()] == [r["track_id"] for r in theirs.summary()] == [7, 3, 12]
    assert ours.to_csv() == theirs.to_csv()
    assert not np.array_equal(ours.plot(), Results(image, str(PHOTOS[0]), NAMES, detections).plot())  # "id:7 ..."


def test_update_clips_like_ultralytics(detections):
    image = cv2.imread(str(PHOTOS[0]))
    ours, theirs = Results(image, str(PHOTOS[0]), NAMES, detections.clone()), peer_results(image, detections)
    outside = torch.tensor([[-20.0, -5.0, 5000.0, 90.0, 0.8, 2.0]])
    ours.update(boxes=outside.clone())
    theirs.update(boxes=outside.clone())
    assert torch.equal(ours.boxes.data, theirs.boxes.data)


def test_csv_and_dataframe_match_ultralytics(detections):
    image = cv2.imread(str(PHOTOS[0]))
    ours, theirs = Results(image, str(PHOTOS[0]), NAMES, detections.clone()), peer_results(image, detections)
    for normalize in (False, True):
        assert ours.to_csv(normalize=normalize) == theirs.to_csv(normalize=normalize)
        assert ours.to_df(normalize=normalize).equals(theirs.to_df(normalize=normalize))
    assert ours.new().to_csv() == theirs.new().to_csv()


def test_crops_match_ultralytics(tmp_path, detections):
    """save_crop writes one file per detection under the class name, cut as ultralytics cuts (gain and padding)."""
    image = cv2.imread(str(PHOTOS[0]))
    ours, theirs = Results(image, str(PHOTOS[0]), NAMES, detections.clone()), peer_results(image, detections)
    written = ours.save_crop(tmp_path / "ours", "bus")
    theirs.save_crop(tmp_path / "theirs", "bus")
    peer_files = sorted(p.relative_to(tmp_path / "theirs") for p in (tmp_path / "theirs").rglob("*.jpg"))
    assert sorted(Path(p).relative_to(tmp_path / "ours") for p in written) == peer_files
    for name in peer_files:
        assert cv2.imread(str(tmp_path / "ours" / name)).shape == cv2.imread(str(tmp_path / "theirs" / name)).shape


@pytest.mark.slow
def test_show_without_a_display_warns_instead_of_aborting(detections):
    """GUI OpenCV (the track and dev extras bring it) aborts Python when Qt finds no display: show() checks first."""
    code = (
        "import cv2, torch; from detr_toolkit import Results\n"
        f"r = Results(cv2.imread({str(PHOTOS[0])!r}), 'bus.jpg', {{0: 'person'}}, "
        f"torch.tensor({detections.tolist()}))\n"
        "r.show()"
    )
    environment = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr[-1000:]
    assert "show(): no display" in run.stderr
