"""The generated aerial datasets of the small-data benchmark (data/aerial.py): labels that our loader and a peer's
read alike, one stream per seed, and kinds that differ as they say."""

from __future__ import annotations

import numpy as np
import pytest

from detr_toolkit.data.aerial import CLASSES, KINDS, draw_image, make_aerial
from detr_toolkit.data.splits import load_split


def object_sizes(kind: str, images: int = 4) -> tuple[list[int], list[float]]:
    """Objects per image and the long side (px) of each, over a few train images of `kind`."""
    counts, sizes = [], []
    for index in range(images):
        image, objects = draw_image(np.random.default_rng([1, 0, index]), [], KINDS[kind])
        h, w = image.shape[:2]
        assert image.dtype == np.uint8 and KINDS[kind].width[0] <= w < KINDS[kind].width[1]
        for _, x1, y1, x2, y2 in objects:
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        counts.append(len(objects))
        sizes += [max(x2 - x1, y2 - y1) for _, x1, y1, x2, y2 in objects]
    return counts, sizes


def test_kinds_differ_as_documented():
    dense_counts, dense_sizes = object_sizes("dense")
    medium_counts, medium_sizes = object_sizes("medium")
    assert min(dense_counts) >= 5 and np.median(dense_counts) >= 8
    assert 1 <= min(medium_counts) <= max(medium_counts) <= 6
    assert np.median(dense_sizes) < 35 < np.median(medium_sizes)


def test_dataset_loads_and_repeats_from_its_seed(tmp_path):
    data = make_aerial(tmp_path / "a", train=2, val=1, seed=3, kind="medium")
    again = make_aerial(tmp_path / "b", train=2, val=1, seed=3, kind="medium")
    for split in ("train", "val"):
        annotations, names = load_split(str(data), split)
        repeated, _ = load_split(str(again), split)
        assert names == dict(enumerate(CLASSES))
        assert len(annotations) == {"train": 2, "val": 1}[split]
        for a, b in zip(annotations, repeated):
            assert len(a.boxes) > 0 and np.array_equal(a.boxes, b.boxes)
            assert a.image.read_bytes() == b.image.read_bytes()
    with pytest.raises(ValueError, match="kind 'sparse'"):
        make_aerial(tmp_path / "c", train=1, val=1, kind="sparse")
