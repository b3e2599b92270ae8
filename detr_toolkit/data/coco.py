"""COCO-format datasets: an instances JSON and its image folder, optionally a subset of it.

A subset keeps the given categories (names or ids; their classes renumbered 0..n-1 in that order) and the
images holding at least one of them, then the given image ids and/or the first `max_images` by id:
`load_coco("instances_val2017.json", "val2017/", categories=["person", "car"], max_images=500)`.
Crowd boxes (`iscrowd`) are left out, as COCO's evaluator ignores them.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .annotations import Annotation, LabelChecker


def _read(instances: Path) -> dict:
    try:
        data = json.loads(instances.read_text(encoding="utf-8"))
    except OSError as error:
        raise DatasetError(f"{instances}: cannot read ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise DatasetError(f"{instances}: malformed JSON at line {error.lineno}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{instances}: not a COCO instances file (no {key!r} list)")
    return data


def select_categories(categories: list[dict], wanted: Sequence[str | int] | None, where: Path) -> dict[int, int]:
    """{COCO category id: our class index} for `wanted` (names or ids, in that order), or all by id."""
    by_name = {c["name"]: c["id"] for c in categories}
    ids = {c["id"] for c in categories}
    if wanted is None:
        return {cid: i for i, cid in enumerate(sorted(ids))}
    chosen = []
    for item in wanted:
        cid = by_name.get(item, item)
        if cid not in ids:
            raise DatasetError(f"{where}: no category {item!r} (known: {', '.join(sorted(by_name))})")
        chosen.append(cid)
    return {cid: i for i, cid in enumerate(chosen)}


def load_coco(
    instances: str | Path,
    images_dir: str | Path,
    categories: Sequence[str | int] | None = None,
    image_ids: Sequence[int] | None = None,
    max_images: int | None = None,
    on_error: str = "error",
) -> tuple[list[Annotation], dict[int, str]]:
    """-> (one Annotation per kept image, class names); see the module docstring for subsets."""
    from pycocotools.coco import COCO

    instances, images_dir = Path(instances), Path(images_dir)
    data = _read(instances)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    classes = select_categories(data["categories"], categories, instances)
    names = {index: coco.cats[cid]["name"] for cid, index in classes.items()}
    ids = sorted(coco.imgs)
    if categories is not None:
        holding = {a["image_id"] for a in data["annotations"] if a["category_id"] in classes}
        ids = [i for i in ids if i in holding]
    if image_ids is not None:
        unknown = sorted(set(image_ids) - set(coco.imgs))
        if unknown:
            raise DatasetError(f"{instances}: no image(s) with id {unknown[:5]}")
        ids = [i for i in ids if i in set(image_ids)]
    ids = ids[:max_images] if max_images is not None else ids
    checker = LabelChecker(len(classes), on_error)
    annotations = []
    for image_id in ids:
        info = coco.imgs[image_id]
        path = images_dir / info["file_name"]
        if not path.is_file():
            raise DatasetError(f"{path}: image file not found (image id {image_id} of {instances.name})")
        size = (int(info["height"]), int(info["width"]))
        boxes, labels = [], []
        for ann in coco.imgToAnns.get(image_id, []):
            if ann.get("iscrowd") or (categories is not None and ann["category_id"] not in classes):
                continue
            where = f"{instances}: annotation {ann.get('id')} (image {info['file_name']})"
            x, y, w, h = ann["bbox"]
            cls = classes.get(ann["category_id"], -1)
            if checker.box_ok(where, cls, (x, y, x + w, y + h), size):
                boxes.append((x, y, x + w, y + h))
                labels.append(cls)
        annotations.append(
            Annotation(path, size, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64))
        )
    if not annotations:
        raise DatasetError(f"{instances}: no images left in the subset asked for")
    return annotations, names
