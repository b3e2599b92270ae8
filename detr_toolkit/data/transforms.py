"""Training and validation transforms with torchvision.transforms.v2 and tv_tensors, switched by the train config.

RT-DETR's recipe (train): photometric distortion, zoom out, IoU crop, horizontal flip, resize to imgsz,
drop boxes that became degenerate. Validation only resizes. Boxes travel as tv_tensors.BoundingBoxes (and
instance masks as tv_tensors.Mask), so every geometric transform moves them with the image.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .iou_crop import BatchedRandomIoUCrop

AUGMENT_KEYS = {"photometric", "zoom_out", "iou_crop", "hflip"}
DEFAULT_AUGMENT = {"photometric": 0.5, "zoom_out": 0.5, "iou_crop": 0.8, "hflip": 0.5}  # probabilities


def build_transforms(imgsz: int, augment: dict[str, float] | None, crops: bool = True) -> v2.Compose:
    """Transforms taking {"image": Image uint8, "boxes": BoundingBoxes xyxy, "labels"[, "masks": Mask]} to a resized
    float sample.

    augment: probabilities for each of AUGMENT_KEYS (0 or missing: off); None for validation (resize only).
    crops: False leaves out zoom out and IoU crop (a mosaic has moved and cut its images already, as in DEIM).
    """
    steps: list[Any] = []
    if augment:
        unknown = sorted(set(augment) - AUGMENT_KEYS)
        if unknown:
            raise ValueError(f"unknown augment key(s) {unknown} (known: {sorted(AUGMENT_KEYS)})")
        if augment.get("photometric"):
            steps.append(v2.RandomPhotometricDistort(p=augment["photometric"]))
        if augment.get("zoom_out") and crops:
            steps.append(v2.RandomApply([v2.RandomZoomOut(fill=0)], p=augment["zoom_out"]))
        # Boxes the IoU crop cuts away become empty; the final SanitizeBoundingBoxes drops them.
        if augment.get("iou_crop") and crops:
            steps.append(v2.RandomApply([BatchedRandomIoUCrop()], p=augment["iou_crop"]))
        if augment.get("hflip"):
            steps.append(v2.RandomHorizontalFlip(p=augment["hflip"]))
    steps += [
        Resize((imgsz, imgsz), antialias=True),
        v2.SanitizeBoundingBoxes(min_size=1),
        v2.ToDtype(torch.float32, scale=True),
    ]
    return v2.Compose(steps)


class Resize(v2.Resize):
    """v2.Resize, with masks sampled at their pixels' centres (nearest-exact): v2's nearest takes each output pixel
    from the input pixel at its corner, which moves masks by up to a pixel against the bilinearly resized image."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return F.resize(inpt, list(self.size), interpolation=v2.InterpolationMode.NEAREST_EXACT)
        return super().transform(inpt, params)


def to_sample(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
              masks: torch.Tensor | None = None) -> dict[str, Any]:  # fmt: skip
    """(3, H, W) uint8 RGB, (N, 4) xyxy pixels, (N,)[, (N, H, W) uint8] -> the dict `build_transforms` takes."""
    canvas = tuple(image.shape[-2:])
    sample = {
        "image": tv_tensors.Image(image),
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=canvas),
        "labels": labels,
    }
    if masks is not None:
        sample["masks"] = tv_tensors.Mask(masks)
    return sample
