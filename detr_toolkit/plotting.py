"""Drawing detections on images with OpenCV, and whether a window can show them."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import cv2
import numpy as np

# A 20-colour palette (BGR), indexed by class id.
PALETTE = [
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72), (23, 204, 146),
    (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100),
    (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255),
]  # fmt: skip


def has_display() -> bool:
    """Whether a window can open. On Linux an X11 or Wayland display must be named: GUI OpenCV's Qt aborts the whole
    process without one (no exception to catch), so this is checked first, as ultralytics' check_imshow does."""
    return not sys.platform.startswith("linux") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def class_color(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def draw_masks(image: np.ndarray, masks: np.ndarray, classes: Sequence[int], alpha: float = 0.5) -> np.ndarray:
    """Blend masks (N, H, W) (non-zero inside) into `image` in their classes' colours, the first on top; draws in
    place and returns it."""
    for mask, cls in zip(masks[::-1], list(classes)[::-1]):
        inside = mask > 0
        image[inside] = (image[inside] * (1 - alpha) + np.array(class_color(int(cls))) * alpha).astype(np.uint8)
    return image


def draw_detections(
    image: np.ndarray,
    boxes_xyxy: np.ndarray,
    classes: Sequence[int],
    texts: Sequence[str | None],
    line_width: int | None = None,
    font_size: float | None = None,
) -> np.ndarray:
    """Draw boxes (N, 4) in pixels with a filled label above each; draws on `image` in place and returns it."""
    line_width = line_width or max(round(sum(image.shape[:2]) / 2 * 0.003), 2)
    font_scale = font_size or line_width / 3
    thickness = max(line_width - 1, 1)
    for (x1, y1, x2, y2), cls, text in zip(boxes_xyxy.round().astype(int), classes, texts):
        color = class_color(int(cls))
        cv2.rectangle(image, (x1, y1), (x2, y2), color, line_width, cv2.LINE_AA)
        if not text:
            continue
        (w, h), _ = cv2.getTextSize(text, 0, font_scale, thickness)
        above = y1 - h - 3 >= 0
        top = y1 - h - 3 if above else y1
        cv2.rectangle(image, (x1, top), (x1 + w, top + h + 3), color, -1, cv2.LINE_AA)
        text_color = (0, 0, 0) if sum(color) / 3 > 150 else (255, 255, 255)
        cv2.putText(image, text, (x1, top + h + 1), 0, font_scale, text_color, thickness, cv2.LINE_AA)
    return image
