"""Segmentation labels as training targets: YOLO-seg polygon rows and COCO `segmentation` (polygons, RLE) become
instance masks, which every augmentation (flip, zoom out, IoU crop, mosaic, mixup, resize) moves with the boxes."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from faster_coco_eval.core import mask as coco_mask

from detr_toolkit.data.coco import load_coco
from detr_toolkit.data.dataset import DetectionDataset
from detr_toolkit.data.synthetic import make_synthetic
from detr_toolkit.data.transforms import DEFAULT_AUGMENT
from detr_toolkit.data.yolo import load_yolo
from detr_toolkit.errors import DatasetError


@pytest.fixture(scope="module")
def seg_set(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("seg"), train=24, val=4, size=128, segments=True)


def xyxy(boxes: torch.Tensor, size: int = 96) -> torch.Tensor:
    """Targets' (n, 4) cxcywh in 0..1 -> x1 y1 x2 y2 pixels."""
    return torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1) * size


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(n, H, W) -> (n, 4) x1 y1 x2 y2 of each mask's pixels (pixel edges)."""
    rows, cols = masks.any(2), masks.any(1)
    first = lambda m: m.float().argmax(1)
    last = lambda m: m.shape[1] - m.flip(1).float().argmax(1)
    return torch.stack([first(cols), first(rows), last(cols), last(rows)], 1).float()


def test_yolo_seg_rows_become_polygons_and_masks(seg_set):
    annotations, _ = load_yolo(seg_set)
    first = annotations[0]
    assert first.segments is not None and len(first.segments) == len(first.boxes) > 0
    for polygons, box in zip(first.segments, first.boxes):
        (polygon,) = polygons
        assert np.allclose(np.concatenate([polygon.min(0), polygon.max(0)]), box, atol=0.01)
    dataset = DetectionDataset(annotations, {i: str(i) for i in range(4)}, 64)
    _, target = dataset[0]
    masks = target["masks"]
    assert masks.shape == (len(target["boxes"]), 64, 64) and masks.dtype == torch.uint8
    labelled = torch.from_numpy(first.boxes) * 64 / 128  # the label file's boxes, at the resized image's scale
    assert (mask_boxes(masks.bool()) - labelled).abs().max() < 1.0
    assert torch.allclose(xyxy(target["boxes"], 64), mask_boxes(masks.bool()), atol=1e-4)


def test_generated_shapes_on_photo_crops(tmp_path):
    """`photos`: the backgrounds are crops of them (a black photo: black around the objects, where generated
    backgrounds are 60..200 grey levels); the objects' polygons stay the labels."""
    data = make_synthetic(tmp_path, train=6, val=1, size=64, segments=True, photos=[np.zeros((90, 120, 3), np.uint8)])
    annotations, _ = load_yolo(data)
    for annotation in annotations:
        image = cv2.imread(str(annotation.image))
        objects = np.zeros(image.shape[:2], np.uint8)
        for polygons in annotation.segments:
            cv2.fillPoly(objects, [np.round(p).astype(np.int32) for p in polygons], 1)
        around = cv2.erode(1 - objects, np.ones((5, 5), np.uint8)).astype(bool)  # off the objects' antialiased rims
        assert around.any() and image[around].mean() < 5


def test_box_only_rows_in_a_segmentation_set_fill_their_box(tmp_path, seg_set):
    """A plain `class cx cy w h` row among polygon rows: its mask is its box."""
    annotations, _ = load_yolo(seg_set)
    label = seg_set.parent / "labels" / "train" / "train_00000.txt"
    label.write_text(label.read_text() + "0 0.5 0.5 0.25 0.25\n")
    annotations, _ = load_yolo(seg_set)
    assert annotations[0].segments[-1] == []
    _, target = DetectionDataset(annotations[:1], {i: str(i) for i in range(4)}, 128)[0]
    assert target["masks"][-1].sum() == 32 * 32 and target["masks"][-1][48:80, 48:80].all()


def test_augmentations_move_masks_with_their_boxes(seg_set):
    """Training items (photometric, zoom out, IoU crop, flip, mosaic, mixup) over many draws: one mask per box, each
    box its mask's extent; and each mask lies where the same draws move the object's box in the box-only dataset
    (within the nearest-pixel resizes' 2 pixels)."""
    annotations, names = load_yolo(seg_set)
    box_only = [dataclasses.replace(a, segments=None) for a in annotations]
    items = {}
    for key, labels in (("masks", annotations), ("boxes", box_only)):
        dataset = DetectionDataset(labels, names, 96, DEFAULT_AUGMENT, mosaic=0.5, mixup=0.3)
        random.seed(0)
        torch.manual_seed(0)
        items[key] = [dataset[index][1] for index in list(range(len(dataset))) * 2]
    checked = 0
    for target, plain in zip(items["masks"], items["boxes"]):
        masks = target["masks"].bool()
        assert len(masks) == len(target["boxes"]) == len(target["labels"]) and masks.shape[1:] == (96, 96)
        assert masks.flatten(1).any(1).all()
        assert torch.allclose(xyxy(target["boxes"]), mask_boxes(masks), atol=1e-4)
        extents, moved = mask_boxes(masks), xyxy(plain["boxes"])
        # Pair each mask with the box-only item's box of the same class that holds it best.
        inside = ((extents[:, None, :2] >= moved[None, :, :2] - 2) & (extents[:, None, 2:] <= moved[None, :, 2:] + 2)
                  ).all(-1) & (target["labels"][:, None] == plain["labels"][None])  # fmt: skip
        assert inside.any(1).all(), (extents, moved)
        checked += len(masks)
    assert checked > 100


def coco_set(tmp_path, segmentation) -> tuple:
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.zeros((40, 60, 3), np.uint8))
    instances = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 60}],
        "categories": [{"id": 7, "name": "thing"}],
        "annotations": [{"id": 3, "image_id": 1, "category_id": 7, "bbox": [10, 5, 20, 10], "iscrowd": 0,
                         "segmentation": segmentation}],
    }  # fmt: skip
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    return tmp_path / "instances.json", tmp_path


def test_coco_polygons_and_rle_become_masks(tmp_path):
    polygon = [[10, 5, 30, 5, 30, 15, 10, 15]]
    table, names = load_coco(*coco_set(tmp_path, polygon))
    assert np.allclose(table[0].segments[0][0], np.array(polygon[0]).reshape(-1, 2))
    box_mask = np.zeros((40, 60), np.uint8, order="F")
    box_mask[5:16, 10:31] = 1
    compressed = coco_mask.encode(box_mask)
    compressed["counts"] = compressed["counts"].decode()
    runs = [len(list(run)) for _, run in itertools.groupby(box_mask.ravel(order="F"))]  # column-major, 0s first
    uncompressed = {"size": [40, 60], "counts": runs}
    for segmentation in (compressed, uncompressed):
        table, _ = load_coco(*coco_set(tmp_path, segmentation))
        _, target = DetectionDataset(table, names, 60)[0]
        mask = target["masks"][0]
        assert mask.shape == (60, 60) and abs(int(mask.sum()) - 21 * 11 * 1.5) < 25  # 40 -> 60 rows: 1.5 times


@pytest.mark.parametrize(
    "segmentation", [[[1, 2, 3]], "polygon", {"size": [10, 10], "counts": "x"}, [[0, 0, 1, "a", 2, 2]]]
)
def test_malformed_coco_segmentation_names_the_annotation(tmp_path, segmentation):
    with pytest.raises(DatasetError, match=r"instances.json: annotation 3: malformed segmentation"):
        load_coco(*coco_set(tmp_path, segmentation))
    with pytest.warns(UserWarning, match="malformed segmentation"):
        table, _ = load_coco(*coco_set(tmp_path, segmentation), on_error="skip")
    assert len(table[0].boxes) == 1 and table[0].segments == [[]]


def test_mask_map_scores_each_images_first_rows_against_the_polygons():
    """coco_metrics(masks=...): per image, the RLEs of its first detection rows (rows beyond them, as past the
    validator's 100 masks, count for boxes only); the objects' own masks score mask mAP 1, masks off the objects
    score less, box mAP unmoved."""
    from detr_toolkit.data.annotations import Annotation
    from detr_toolkit.engine.coco_metrics import coco_metrics

    square = np.array([[10, 10], [30, 10], [30, 30], [10, 30]], np.float64)
    annotations = [
        Annotation(Path(f"{i}.jpg"), (48, 64), np.array([[10, 10, 30, 30], [40, 8, 60, 40]], np.float32),
                   np.array([0, 1]), [[square], [square + [30, -2] + [[0, 0], [0, 0], [0, 12], [0, 12]]]])
        for i in range(2)
    ]  # fmt: skip
    detections = [np.array([[10, 10, 30, 30, 0.9, 0], [40, 8, 60, 40, 0.8, 1], [0, 0, 5, 5, 0.1, 1]])] * 2

    def rles(shift: int) -> list[dict]:
        masks = np.zeros((48, 64, 2), np.uint8, order="F")
        masks[10 + shift : 30 + shift, 10:30, 0] = 1
        masks[8 + shift : 40 + shift, 40:60, 1] = 1
        return coco_mask.encode(masks)

    right, _ = coco_metrics(annotations, detections, {0: "a", 1: "b"}, masks=[rles(0), rles(0)])
    off, _ = coco_metrics(annotations, detections, {0: "a", 1: "b"}, masks=[rles(0), rles(9)])
    assert right["mask_mAP50-95"] == pytest.approx(1.0) and right["mAP50-95"] == pytest.approx(1.0)
    assert off["mask_mAP50-95"] < 0.8 and off["mAP50-95"] == right["mAP50-95"]
