"""Our results in the tools ultralytics users plug them into, the real packages: supervision and SAHI."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import ASSETS, PHOTOS
from torchvision.ops import box_iou

from detr_toolkit import RTDETR, Results
from detr_toolkit.data.synthetic import draw_image

NAMES = {0: "person", 1: "bus", 2: "dog"}
DETECTIONS = torch.tensor([[10.0, 20.0, 110.0, 220.0, 0.9, 0.0], [50.5, 60.0, 300.0, 400.25, 0.6, 1.0]])


@pytest.fixture(scope="module")
def demo_model() -> RTDETR:
    return RTDETR(ASSETS / "rtdetr-tiny-shapes.safetensors")


@pytest.mark.parametrize("rows", [DETECTIONS, DETECTIONS[:0],
                                  torch.cat([DETECTIONS[:, :4], torch.tensor([[4.0], [9.0]]), DETECTIONS[:, 4:]], 1)],
                         ids=["boxes", "none", "tracked"])  # fmt: skip
def test_supervision_reads_ours_as_it_reads_ultralytics(rows):
    """Detections.from_ultralytics gives the same detections from our Results as from ultralytics' own; the
    annotators draw them (or nothing, for an empty result)."""
    import supervision as sv
    from ultralytics.engine.results import Results as PeerResults

    image = cv2.imread(str(PHOTOS[0]))
    ours = sv.Detections.from_ultralytics(Results(image, str(PHOTOS[0]), NAMES, rows.clone()))
    theirs = sv.Detections.from_ultralytics(PeerResults(image, str(PHOTOS[0]), NAMES, boxes=rows.clone()))
    assert len(ours) == len(theirs) == len(rows)
    np.testing.assert_allclose(ours.xyxy, theirs.xyxy)
    np.testing.assert_allclose(ours.confidence, theirs.confidence)
    np.testing.assert_array_equal(ours.class_id, theirs.class_id)
    np.testing.assert_array_equal(ours.data["class_name"], theirs.data["class_name"])
    assert (ours.tracker_id is None) == (theirs.tracker_id is None)
    if theirs.tracker_id is not None:
        np.testing.assert_array_equal(ours.tracker_id, theirs.tracker_id)
    annotated = sv.LabelAnnotator().annotate(sv.BoxAnnotator().annotate(image.copy(), ours), ours)
    assert annotated.shape == image.shape
    assert np.array_equal(annotated, image) == (len(rows) == 0)


def test_supervision_on_a_prediction(demo_model):
    import supervision as sv

    result = demo_model.predict(ASSETS / "shapes.jpg", conf=0.5, verbose=False)[0]
    detections = sv.Detections.from_ultralytics(result)
    assert len(detections) == len(result) > 0
    np.testing.assert_allclose(detections.xyxy, result.boxes.xyxy.numpy())
    assert list(detections.data["class_name"]) == [result.names[int(c)] for c in result.boxes.cls]


def test_sahi_slices_a_large_image_around_our_model(demo_model):
    """SAHI's sliced prediction with our model object finds every shape of a 2x2 mosaic of demo images at its
    place in the whole image (SAHI shifts each slice's boxes back)."""
    from sahi import AutoDetectionModel
    from sahi.predict import get_sliced_prediction

    tiles, truth = [], []
    for k, seed in enumerate((11, 12, 13, 14)):
        tile, objects = draw_image(np.random.default_rng(seed), 288, 4)
        dx, dy = (k % 2) * 288, (k // 2) * 288
        tiles.append(tile)
        truth += [(c, x1 + dx, y1 + dy, x2 + dx, y2 + dy) for c, x1, y1, x2, y2 in objects]
    mosaic = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)
    model = AutoDetectionModel.from_pretrained(
        model_type="ultralytics", model=demo_model, confidence_threshold=0.5, device="cpu"
    )
    assert model.category_names == list(demo_model.names.values())
    sliced = get_sliced_prediction(np.ascontiguousarray(mosaic[..., ::-1]), model, slice_height=288, slice_width=288,
                                   overlap_height_ratio=0.1, overlap_width_ratio=0.1, verbose=0)  # fmt: skip
    found = sliced.object_prediction_list
    boxes = torch.tensor([p.bbox.to_xyxy() for p in found], dtype=torch.float32)
    overlaps = box_iou(torch.tensor([t[1:] for t in truth], dtype=torch.float32), boxes)
    best = overlaps.max(1)
    assert (best.values > 0.7).all(), best.values
    assert [found[i].category.id for i in best.indices.tolist()] == [t[0] for t in truth]
