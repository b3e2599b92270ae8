"""Training augmentation: our batched IoU crop draws the crops torchvision's RandomIoUCrop draws."""

from __future__ import annotations

import statistics

import pytest
import torch
from torchvision.ops import box_iou
from torchvision.transforms import v2

from detr_toolkit.data.iou_crop import BatchedRandomIoUCrop
from detr_toolkit.data.transforms import build_transforms, to_sample

BOXES = torch.tensor([[10.0, 12.0, 40.0, 50.0], [60.0, 20.0, 90.0, 44.0], [30.0, 60.0, 70.0, 110.0], [5, 90, 20, 118]])


def crop_statistics(transform: v2.RandomIoUCrop, draws: int) -> dict[str, float]:
    """Fraction of draws kept whole; mean area fraction, aspect and boxes kept of the crops."""
    sample = to_sample(torch.zeros(3, 120, 100, dtype=torch.uint8), BOXES, torch.zeros(4))
    flat = [sample["image"], sample["boxes"]]
    torch.manual_seed(0)
    kept, areas, aspects, boxes = 0, [], [], []
    for _ in range(draws):
        params = transform.make_params(flat)
        if not params:
            kept += 1
            continue
        top, left, height, width = params["top"], params["left"], params["height"], params["width"]
        assert 0 <= left and left + width <= 100 and 0 <= top and top + height <= 120
        assert 0.5 <= width / height <= 2.0
        inside = params["is_within_crop_area"]
        centers = (BOXES[:, :2] + BOXES[:, 2:]) / 2
        expected = (centers[:, 0] > left) & (centers[:, 0] < left + width)
        expected &= (centers[:, 1] > top) & (centers[:, 1] < top + height)
        assert torch.equal(inside, expected) and inside.any()
        iou = box_iou(torch.tensor([[left, top, left + width, top + height]], dtype=torch.float32), BOXES[inside])
        assert iou.max() > 0
        areas.append(width * height / 12000)
        aspects.append(width / height)
        boxes.append(int(inside.sum()))
    return {
        "kept": kept / draws,
        "area": statistics.mean(areas),
        "aspect": statistics.mean(aspects),
        "boxes": statistics.mean(boxes),
    }


def test_batched_iou_crop_matches_torchvision_distribution():
    draws = 600
    ours = crop_statistics(BatchedRandomIoUCrop(), draws)
    theirs = crop_statistics(v2.RandomIoUCrop(), draws)
    # Same sampling rules, different random streams: the statistics agree within sampling error
    # (standard errors about 0.015 for "kept", 0.01 for "area", 0.02 for "aspect", 0.04 for "boxes").
    assert ours["kept"] == pytest.approx(theirs["kept"], abs=0.06)
    assert ours["area"] == pytest.approx(theirs["area"], abs=0.04)
    assert ours["aspect"] == pytest.approx(theirs["aspect"], abs=0.08)
    assert ours["boxes"] == pytest.approx(theirs["boxes"], abs=0.15)


def test_iou_crop_without_boxes_keeps_the_image():
    sample = to_sample(torch.zeros(3, 50, 50, dtype=torch.uint8), torch.zeros(0, 4), torch.zeros(0))
    assert BatchedRandomIoUCrop().make_params([sample["image"], sample["boxes"]]) == {}


def test_training_transforms_give_valid_samples():
    transforms = build_transforms(64, {"photometric": 0.5, "zoom_out": 0.5, "iou_crop": 1.0, "hflip": 0.5})
    torch.manual_seed(1)
    image = torch.randint(0, 255, (3, 120, 100), dtype=torch.uint8)
    for _ in range(50):
        out = transforms(to_sample(image, BOXES, torch.arange(4)))
        assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.float32
        boxes = out["boxes"].as_subclass(torch.Tensor)
        assert len(boxes) == len(out["labels"]) >= 1
        assert (boxes[:, 2:] - boxes[:, :2] >= 1).all() and boxes.min() >= 0 and boxes.max() <= 64


def test_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="mosaic"):
        build_transforms(64, {"mosaic": 1.0})
