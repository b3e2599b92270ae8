"""Many images' ground truth held in a few flat arrays, read back one `Annotation` at a time.

A list of per-image objects costs a Python object (and its reference count) per image and per array; a data-loader
worker that merely reads them writes those counts, and the garbage collector's passes visit every one, so the
operating system copies the pages they sit on into each worker, one by one, over an epoch (copy-on-read: with
COCO train, ~150 MiB per worker for 20k images read). Flat arrays have no per-item objects: workers share
their pages for good.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .annotations import Annotation


class AnnotationTable(Sequence[Annotation]):
    """N images, M boxes: paths (UTF-8 bytes, one buffer), sizes (N, 2) recorded (height, width), boxes (M, 4) x1 y1
    x2 y2 pixels, classes (M,); image i's boxes are rows starts[i]:starts[i + 1]. Item i -> a new `Annotation`.

    With `segments` (per box, its polygons; see Annotation): their points (P, 2) in one array, polygon g's rows
    polygon_starts[g]:polygon_starts[g + 1], box j's polygons box_polygons[j]:box_polygons[j + 1].
    """

    def __init__(self, paths: Sequence[str | Path], sizes: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
                 counts: np.ndarray, segments: Sequence[list[np.ndarray]] | None = None) -> None:  # fmt: skip
        encoded = [str(path).encode("utf-8", "surrogateescape") for path in paths]
        self._path_bytes = np.frombuffer(b"".join(encoded), np.uint8)
        self._path_starts = np.concatenate([[0], np.cumsum([len(e) for e in encoded], dtype=np.int64)])
        self.sizes = np.asarray(sizes, np.int64).reshape(-1, 2)
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        self.classes = np.asarray(classes, np.int64).reshape(-1)
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        if not len(self.sizes) == len(encoded) == len(self.starts) - 1 or self.starts[-1] != len(self.boxes):
            raise ValueError("paths, sizes and counts must name the same images, counts the boxes")
        self.has_segments = segments is not None
        if segments is not None:
            if len(segments) != len(self.boxes):
                raise ValueError(f"{len(segments)} boxes' segments for {len(self.boxes)} boxes")
            polygons = [np.asarray(p, np.float32).reshape(-1, 2) for box in segments for p in box]
            self.points = np.concatenate(polygons or [np.zeros((0, 2), np.float32)])
            self.polygon_starts = np.concatenate([[0], np.cumsum([len(p) for p in polygons], dtype=np.int64)])
            self.box_polygons = np.concatenate([[0], np.cumsum([len(box) for box in segments], dtype=np.int64)])

    @classmethod
    def of(cls, annotations: Sequence[Annotation]) -> AnnotationTable:
        """The table of `annotations` (itself if it is one)."""
        if isinstance(annotations, AnnotationTable):
            return annotations
        segmented = any(a.segments is not None for a in annotations)
        return cls(
            [a.image for a in annotations],
            np.array([a.size for a in annotations], np.int64).reshape(-1, 2),
            np.concatenate([np.asarray(a.boxes, np.float32).reshape(-1, 4) for a in annotations] or [np.zeros((0, 4))]),
            np.concatenate([np.asarray(a.classes, np.int64).reshape(-1) for a in annotations] or [np.zeros(0)]),
            np.array([len(a.boxes) for a in annotations], np.int64),
            [box for a in annotations for box in (a.segments or [[]] * len(a.boxes))] if segmented else None,
        )

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, index: int | slice) -> Annotation | list[Annotation]:  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"image {index} of {len(self)}")
        index %= len(self)
        path = self._path_bytes[self._path_starts[index] : self._path_starts[index + 1]].tobytes()
        first, last = self.starts[index], self.starts[index + 1]
        height, width = self.sizes[index].tolist()
        return Annotation(Path(path.decode("utf-8", "surrogateescape")), (height, width), self.boxes[first:last].copy(),
                          self.classes[first:last].copy(), self._segments(first, last))  # fmt: skip

    def _segments(self, first: int, last: int) -> list[list[np.ndarray]] | None:
        """Boxes first..last-1's polygons (copies), or None without segments."""
        if not self.has_segments:
            return None
        starts, polygons = self.polygon_starts, self.box_polygons
        return [[self.points[starts[g] : starts[g + 1]].copy() for g in range(polygons[j], polygons[j + 1])]
                for j in range(first, last)]  # fmt: skip

    def __iter__(self) -> Iterator[Annotation]:
        return (self[i] for i in range(len(self)))

    def boxes_per_image(self) -> np.ndarray:
        """(N,) how many boxes each image has."""
        return np.diff(self.starts)
