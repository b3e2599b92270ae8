"""Instance masks with the ultralytics surface: `Results.masks` of a segmentation model.

r.masks.data    # (N, H, W) uint8 at the image's size, 1 inside the object (as ultralytics' retina masks)
r.masks.xy      # N polygons (K, 2) in pixels, one per mask: its outlines, joined into one where it has parts
r.masks.xyn     # the same, normalised by the image's width and height
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import cv2
import numpy as np
import torch


class Masks:
    """Masks (N, H, W) (uint8, 1 inside) of one image's detections, in the order of its boxes; orig_shape: (H, W)."""

    def __init__(self, data: torch.Tensor | np.ndarray, orig_shape: tuple[int, int]):
        self.data = data[None] if data.ndim == 2 else data
        self.orig_shape = tuple(orig_shape)

    @cached_property
    def xy(self) -> list[np.ndarray]:
        """One float32 polygon (K, 2) of x, y pixels per mask ((0, 2) for an empty mask)."""
        data = self.data.cpu().numpy() if isinstance(self.data, torch.Tensor) else np.asarray(self.data)
        return [mask_to_polygon(mask) for mask in data]

    @cached_property
    def xyn(self) -> list[np.ndarray]:
        """`xy` divided by the image's width and height."""
        height, width = self.orig_shape
        return [polygon / np.array([width, height], dtype=np.float32) for polygon in self.xy]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index) -> Masks:
        if isinstance(index, int):
            index = slice(index, index + 1 or None)
        return Masks(self.data[index], self.orig_shape)

    def cpu(self) -> Masks:
        return self if isinstance(self.data, np.ndarray) else Masks(self.data.cpu(), self.orig_shape)

    def numpy(self) -> Masks:
        data = self.data.cpu().numpy() if isinstance(self.data, torch.Tensor) else self.data
        return Masks(data, self.orig_shape)

    def cuda(self) -> Masks:
        return Masks(torch.as_tensor(self.data).cuda(), self.orig_shape)

    def to(self, *args: Any, **kwargs: Any) -> Masks:
        return Masks(torch.as_tensor(self.data).to(*args, **kwargs), self.orig_shape)

    def __repr__(self) -> str:
        return f"Masks(shape={self.shape}, orig_shape={self.orig_shape})"


def mask_to_polygon(mask: np.ndarray) -> np.ndarray:
    """A mask (H, W) (non-zero inside) -> its outline as one float32 polygon (K, 2) of x, y pixels.

    A mask of several parts gives one polygon that visits each part's outline in turn, entering and leaving it by
    the same shortest bridge (as ultralytics' `masks2segments` joins them), so that one YOLO-seg line holds it.
    """
    contours = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    parts = [contour.reshape(-1, 2) for contour in sorted(contours, key=len, reverse=True)]
    if not parts:
        return np.zeros((0, 2), dtype=np.float32)
    polygon = parts[0]
    for part in parts[1:]:
        distances = ((polygon[:, None, :] - part[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(distances.argmin(), distances.shape)
        # ... polygon[i], part[j], part[j + 1], ..., part[j - 1], part[j], polygon[i], polygon[i + 1] ...
        detour = np.concatenate([np.roll(part, -j, axis=0), part[j : j + 1], polygon[i : i + 1]])
        polygon = np.concatenate([polygon[: i + 1], detour, polygon[i + 1 :]])
    return polygon.astype(np.float32)
