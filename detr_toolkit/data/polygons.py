"""Instance masks from polygon labels (YOLO-seg rows, COCO `segmentation`), drawn at an image's size."""

from __future__ import annotations

import cv2
import numpy as np

FRACTION_BITS = 4  # vertices to 1/16 pixel


def instance_masks(segments: list[list[np.ndarray]], boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Per object its polygons (K, 2) x y pixels, boxes (N, 4) x1 y1 x2 y2 pixels -> masks (N, H, W) uint8 of an
    image of `size` (H, W): each object's polygons filled with 1 (the pixels whose centres they hold), or, for an
    object without polygons, its box."""
    masks = np.zeros((len(boxes), *size), np.uint8)
    for mask, polygons, box in zip(masks, segments, boxes):
        if polygons:
            # OpenCV fills the integer points inside; pixel (i, j)'s centre is (i + 0.5, j + 0.5).
            points = [np.round((p - 0.5) * (1 << FRACTION_BITS)).astype(np.int32) for p in polygons]
            cv2.fillPoly(mask, points, 1, shift=FRACTION_BITS)
        else:
            x1, y1, x2, y2 = np.round(box).astype(int).tolist()
            mask[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = 1
    return masks
