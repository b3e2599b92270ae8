"""Mosaic: four training images in one, so every image of a small dataset shows more objects in new contexts.

YOLOv5/ultralytics' layout, which keeps objects at about their own scale (DEIM's quadrant mosaic halves them, which
small objects cannot afford): each image is resized to fit `size`, the four meet at a random centre of a
2*size x 2*size canvas, the canvas is scaled by a random factor and a `size` x `size` window around its middle
(shifted at random) is cut out. Boxes move with the pixels as tv_tensors.BoundingBoxes; a box the window cuts is
clipped to it, and dropped when less than `min_visible` of it (or a side under `min_size` pixels) remains. Masks
(tv_tensors.Mask, with segmentation labels) are resized once, straight to their place in the window.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.ops import box_area
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F


class Mosaic:
    """Four samples {"image": Image uint8 (3, H, W), "boxes": BoundingBoxes xyxy, "labels": (n,), optionally
    "masks": Mask (n, H, W)} -> one sample of size x size, boxes (and masks) in its pixels.

    scale: range of the canvas's random scale factor; translate: the window's random shift, a fraction of size.
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.5, 1.5), translate: float = 0.1, fill: int = 114,
                 min_visible: float = 0.25, min_size: float = 2.0):  # fmt: skip
        self.size, self.scale, self.translate, self.fill = size, scale, translate, fill
        self.min_visible, self.min_size = min_visible, min_size

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return self.apply(samples, **self.make_params())

    def make_params(self) -> dict[str, Any]:
        """A random layout: where the four images meet on the canvas, the canvas's scale, the window's shift."""
        s = self.size
        return {
            "centre": (int(random.uniform(0.5 * s, 1.5 * s)), int(random.uniform(0.5 * s, 1.5 * s))),
            "factor": random.uniform(*self.scale),
            "shift": (random.uniform(-self.translate, self.translate) * s,
                      random.uniform(-self.translate, self.translate) * s),
        }  # fmt: skip

    def apply(self, samples: list[dict[str, Any]], centre: tuple[int, int], factor: float,
              shift: tuple[float, float]) -> dict[str, Any]:  # fmt: skip
        """The mosaic of `samples` (4) meeting at `centre` (x, y) of the canvas, scaled by `factor`, cut `shift`
        (x, y) pixels from its middle."""
        if len(samples) != 4:
            raise ValueError(f"a mosaic takes 4 samples, got {len(samples)}")
        s = self.size
        canvas = torch.full((3, 2 * s, 2 * s), self.fill, dtype=torch.uint8)
        centre_x, centre_y = centre
        boxes, labels, places = [], [], []
        for quadrant, sample in enumerate(samples):
            image, placed = self._fit(sample)
            height, width = image.shape[-2:]
            # The image's corner meets the centre: top-left, top-right, bottom-left, bottom-right of it.
            left = centre_x - width if quadrant in (0, 2) else centre_x
            top = centre_y - height if quadrant in (0, 1) else centre_y
            x0, y0 = max(left, 0), max(top, 0)
            x1, y1 = min(left + width, 2 * s), min(top + height, 2 * s)
            canvas[:, y0:y1, x0:x1] = image[:, y0 - top : y1 - top, x0 - left : x1 - left]
            boxes.append(placed + torch.tensor([left, top, left, top], dtype=placed.dtype))
            labels.append(sample["labels"])
            places.append((left, top, width, height))
        result = self._window(canvas, torch.cat(boxes), torch.cat(labels), factor, shift)
        if "masks" in samples[0]:
            masks = torch.cat([self._place_masks(sample["masks"], place, result["window"])
                               for sample, place in zip(samples, places)])  # fmt: skip
            result["masks"] = tv_tensors.Mask(masks[result.pop("kept")])
        else:
            result.pop("kept")
        del result["window"]
        return result

    def _place_masks(self, masks: torch.Tensor, place: tuple[int, int, int, int],
                     window: tuple[float, int, int]) -> torch.Tensor:  # fmt: skip
        """A sample's masks (n, H, W), placed on the canvas at `place` (left, top, width, height), -> (n, size, size)
        in the `window` (scale, left, top) cut from the scaled canvas."""
        s = self.size
        scale, window_left, window_top = window
        left, top, width, height = place
        x0, y0 = round(left * scale) - window_left, round(top * scale) - window_top
        size = [max(round(height * scale), 1), max(round(width * scale), 1)]
        resized = F.resize(tv_tensors.Mask(masks), size, interpolation=InterpolationMode.NEAREST_EXACT)
        out = torch.zeros(len(masks), s, s, dtype=masks.dtype)
        h, w = resized.shape[-2:]
        ox0, oy0, ox1, oy1 = max(x0, 0), max(y0, 0), min(x0 + w, s), min(y0 + h, s)
        if ox1 > ox0 and oy1 > oy0:
            out[:, oy0:oy1, ox0:ox1] = resized[:, oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0]
        return out

    def _fit(self, sample: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The sample's image resized so its longer side is `size`, and its boxes (xyxy pixels, plain tensor)."""
        height, width = sample["image"].shape[-2:]
        ratio = self.size / max(height, width)
        new_size = [max(round(height * ratio), 1), max(round(width * ratio), 1)]
        image = F.resize(sample["image"], new_size, antialias=True)
        boxes = F.resize(sample["boxes"], new_size)
        return image.as_subclass(torch.Tensor), boxes.as_subclass(torch.Tensor).float()

    def _window(self, canvas: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, factor: float,
                shift: tuple[float, float]) -> dict[str, Any]:  # fmt: skip
        """Scale the canvas by `factor` and cut the size x size window around its middle moved by `shift`; the sample,
        with "kept" (which boxes remain) and "window" (scale, left, top of the cut) for the masks."""
        s = self.size
        scaled = max(round(2 * s * factor), s)
        image = F.resize(tv_tensors.Image(canvas), [scaled, scaled], antialias=True)
        boxes = boxes * (scaled / (2 * s))
        left = min(max(round((scaled - s) / 2 + shift[0]), 0), scaled - s)
        top = min(max(round((scaled - s) / 2 + shift[1]), 0), scaled - s)
        image = F.crop(image, top, left, s, s)
        whole = boxes - torch.tensor([left, top, left, top], dtype=boxes.dtype)
        clipped = whole.clamp(min=0, max=s)
        sides = clipped[:, 2:] - clipped[:, :2]
        visible = box_area(clipped) / box_area(whole).clamp(min=1e-6)
        keep = (visible >= self.min_visible) & (sides >= self.min_size).all(dim=1)
        return {
            "image": image,
            "boxes": tv_tensors.BoundingBoxes(clipped[keep], format="XYXY", canvas_size=(s, s)),
            "labels": labels[keep],
            "kept": keep,
            "window": (scaled / (2 * s), left, top),
        }
