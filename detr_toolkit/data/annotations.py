"""One image's ground truth, as every dataset format is read into, and the checks labels go through.

A label problem (class out of range, box outside the image or of zero size, malformed line) is either an
error naming file and line (`on_error="error"`, the default) or a warning, the box left out (`"skip"`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError, SourceError
from .images import header_size, read_image

ON_ERROR = ("error", "skip")
EDGE_TOLERANCE = 1.0  # pixels a box may overhang the image (rounding in label tools)


@dataclass
class Annotation:
    """image: its file; size: (height, width); boxes: (N, 4) x1 y1 x2 y2 in pixels; classes: (N,) in 0..nc-1;
    segments: per box, the polygons (K, 2) x y in pixels that outline its object (instance segmentation labels; []
    for a box without), or None in a dataset of boxes only."""

    image: Path
    size: tuple[int, int]
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    segments: list[list[np.ndarray]] | None = None


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header (EXIF rotation applied); DatasetError if missing or unreadable,
    LimitError if it has more pixels than limits.IMAGE_PIXELS."""
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found")
    size = header_size(path)
    if size is None:  # a format PIL does not read (float TIFF, PFM, ...): OpenCV decodes it, as training will
        try:
            size = read_image(path).shape[:2]
        except SourceError:
            raise DatasetError(f"{path}: not a readable image") from None
    return size


class LabelChecker:
    """Checks boxes one at a time; raises or warns per `on_error`, and counts what was skipped."""

    def __init__(self, num_classes: int, on_error: str = "error"):
        if on_error not in ON_ERROR:
            raise DatasetError(f"on_error={on_error!r}: use one of {ON_ERROR}")
        self.num_classes, self.on_error = num_classes, on_error
        self.skipped = 0

    def problem(self, where: str, message: str) -> None:
        """Report a bad label at `where` ("file:line")."""
        if self.on_error == "error":
            raise DatasetError(f"{where}: {message}")
        self.skipped += 1
        warnings.warn(f"{where}: {message} (skipped)", stacklevel=3)

    def box_ok(self, where: str, cls: int, box: tuple[float, float, float, float], size: tuple[int, int]) -> bool:
        """True if class `cls` and pixel box x1 y1 x2 y2 are valid in an image of `size` (h, w)."""
        height, width = size
        x1, y1, x2, y2 = box
        if not 0 <= cls < self.num_classes:
            self.problem(where, f"class {cls} out of range 0..{self.num_classes - 1}")
        elif not (x2 > x1 and y2 > y1):
            self.problem(where, f"box of zero size ({x2 - x1:g} x {y2 - y1:g} px)")
        elif min(x1, y1) < -EDGE_TOLERANCE or x2 > width + EDGE_TOLERANCE or y2 > height + EDGE_TOLERANCE:
            self.problem(where, f"box {[round(v, 1) for v in box]} outside the {width}x{height} image")
        else:
            return True
        return False
