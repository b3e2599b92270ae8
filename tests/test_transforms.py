"""Training augmentation: our batched IoU crop draws the crops torchvision's RandomIoUCrop draws; mosaic boxes
follow their pixels."""

from __future__ import annotations

import random
import statistics

import pytest
import torch
from torchvision import tv_tensors
from torchvision.ops import box_iou
from torchvision.transforms import v2

from detr_toolkit.data.iou_crop import BatchedRandomIoUCrop
from detr_toolkit.data.mosaic import Mosaic
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


@pytest.mark.slow
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


def _scene(sizes: list[tuple[int, int]], boxes_per_image: int, generator: torch.Generator) -> list[dict]:
    """Black images of the given (h, w), each with non-overlapping rectangles; label = object id."""
    samples, ident = [], 0
    for height, width in sizes:
        boxes, band = [], height // boxes_per_image
        for row in range(boxes_per_image):  # one horizontal band per box: no overlaps
            x1 = int(torch.randint(0, width - 12, (1,), generator=generator))
            w = int(torch.randint(6, min(60, width - x1) + 1, (1,), generator=generator))
            y1 = row * band + int(torch.randint(0, band - 6, (1,), generator=generator))
            h = int(torch.randint(5, row * band + band - y1 + 1, (1,), generator=generator))
            boxes.append([x1, y1, x1 + w, y1 + h])
        labels = torch.arange(ident, ident + boxes_per_image)
        image = torch.zeros(3, height, width, dtype=torch.uint8)
        samples.append(to_sample(image, torch.tensor(boxes, dtype=torch.float32), labels))
        ident += boxes_per_image
    return samples


def _only(samples: list[dict], ident: int) -> list[dict]:
    """The samples with object `ident` painted white, all else black."""
    painted = []
    for sample in samples:
        image = torch.zeros_like(sample["image"])
        for box, label in zip(sample["boxes"].as_subclass(torch.Tensor).int().tolist(), sample["labels"].tolist()):
            if label == ident:
                image[:, box[1] : box[3], box[0] : box[2]] = 255
        painted.append({**sample, "image": tv_tensors.Image(image)})
    return painted


def test_mosaic_boxes_follow_the_pixels():
    """Random mosaics: each kept box is where its object's pixels are (shifted, scaled, clipped to the window);
    an object is dropped exactly when less than min_visible (a quarter) of it remains in the window."""
    random.seed(0)
    generator = torch.Generator().manual_seed(0)
    size, mosaic = 96, Mosaic(96, fill=0)
    kept_count = dropped_count = 0
    for _ in range(20):
        sizes = [(int(torch.randint(60, 160, (1,), generator=generator)),
                  int(torch.randint(60, 160, (1,), generator=generator))) for _ in range(4)]  # fmt: skip
        samples = _scene(sizes, 4, generator)
        params = mosaic.make_params()
        out = mosaic.apply(samples, **params)
        boxes, labels = out["boxes"].as_subclass(torch.Tensor), out["labels"]
        assert out["image"].shape == (3, size, size) and out["image"].dtype == torch.uint8
        assert len(boxes) == len(labels) and ((boxes >= 0) & (boxes <= size)).all()
        scaled = max(round(2 * size * params["factor"]), size)
        for sample, (height, width) in zip(samples, sizes):
            scale = size / max(height, width) * scaled / (2 * size)  # source pixels -> window pixels
            for source_box, ident in zip(sample["boxes"].as_subclass(torch.Tensor), sample["labels"].tolist()):
                coverage = mosaic.apply(_only(samples, ident), **params)["image"][0].float() / 255
                full_area = float((source_box[2] - source_box[0]) * (source_box[3] - source_box[1])) * scale**2
                visible = float(coverage.sum()) / full_area
                kept = labels == ident
                if kept.any():
                    ys, xs = torch.nonzero(coverage >= 0.5, as_tuple=True)
                    extent = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
                    assert torch.allclose(boxes[kept][0], extent, atol=1.0), (boxes[kept][0], extent)
                    assert visible >= 0.25 - 0.03
                    kept_count += 1
                elif visible > 0:
                    sides = (coverage >= 0.5).any(dim=0).sum(), (coverage >= 0.5).any(dim=1).sum()
                    assert visible < 0.25 + 0.03 or min(sides) <= 2
                    dropped_count += 1
    assert kept_count > 100 and dropped_count > 3


def test_mosaic_clips_and_drops_remnants():
    """Four 64x64 images meeting at the canvas's middle, unscaled: the window is the inner quarter of each; a box
    cut to 56% of its area is clipped and kept, one cut to 2% is dropped."""
    images = [torch.zeros(3, 64, 64, dtype=torch.uint8) for _ in range(4)]
    boxes = torch.tensor([[22.0, 22, 62, 62], [50, 0, 64, 36]])  # image 0 (top-left) shows its [32:, 32:] quarter
    samples = [to_sample(images[0], boxes, torch.tensor([0, 1]))]
    samples += [to_sample(image, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)) for image in images[1:]]
    out = Mosaic(64).apply(samples, centre=(64, 64), factor=1.0, shift=(0.0, 0.0))
    assert out["labels"].tolist() == [0]
    assert out["boxes"].as_subclass(torch.Tensor).tolist() == [[0.0, 0.0, 30.0, 30.0]]
