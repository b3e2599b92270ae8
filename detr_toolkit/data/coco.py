"""COCO-format datasets: an instances JSON and its image folder, optionally a subset of it.

A subset keeps the given categories (names or ids; their classes renumbered 0..n-1 in that order) and the
images holding at least one of them, then the given image ids and/or the first `max_images` by id:
`load_coco("instances_val2017.json", "val2017/", categories=["person", "car"], max_images=500)`.
Crowd boxes (`iscrowd`) are left out, as COCO's evaluator ignores them.

Every record is checked (a missing or malformed field names the record), and nothing is dropped silently:
annotations of an image id without an image record are counted and warned about, and an image whose recorded
size differs from its file has its boxes scaled to the file (counted and warned about), since the predictions
are made, and scored, in the file's pixels.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from .annotations import Annotation, LabelChecker, image_size


def _read(instances: Path) -> dict:
    if not instances.is_file():
        raise DatasetError(f"{instances}: no such instances file")
    try:
        data = json.loads(instances.read_text(encoding="utf-8"))
    except OSError as error:
        raise DatasetError(f"{instances}: cannot read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{instances}: not a UTF-8 text file") from None
    except json.JSONDecodeError as error:
        raise DatasetError(f"{instances}: malformed JSON at line {error.lineno}") from None
    except RecursionError:
        raise DatasetError(f"{instances}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{instances}: not a COCO instances file (expected an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{instances}: not a COCO instances file (no {key!r} list)")
    return data


def _field(record: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """record[key], of the given type; DatasetError naming the record otherwise."""
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: not an object")
    value = record.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        kinds = " or ".join(
            {int: "an integer", str: "a text"}[k] for k in (kind if isinstance(kind, tuple) else (kind,))
        )
        raise DatasetError(f"{where}: {key!r} missing or not {kinds}")
    return value


def _box(record: dict, where: str) -> tuple[float, float, float, float]:
    """The record's bbox [x, y, w, h] as x1 y1 x2 y2."""
    box = record.get("bbox")
    if (
        not isinstance(box, list)
        or len(box) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
    ):
        raise DatasetError(f"{where}: 'bbox' must be 4 finite numbers [x, y, width, height], got {box!r}")
    x, y, w, h = box
    return x, y, x + w, y + h


def select_categories(categories: list[dict], wanted: Sequence[str | int] | None, where: Path) -> dict[int, int]:
    """{COCO category id: our class index} for `wanted` (names or ids, in that order), or all by id."""
    ids = [_field(c, "id", int, f"{where}: category {i}") for i, c in enumerate(categories)]
    names = [str(_field(c, "name", (str, int), f"{where}: category {c.get('id')}")) for c in categories]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{where}: category ids repeat")
    by_name = dict(zip(names, ids))
    if wanted is None:
        return {cid: i for i, cid in enumerate(sorted(ids))}
    chosen = []
    for item in wanted:
        cid = by_name.get(str(item), int(item) if str(item).lstrip("-").isdigit() else None)
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
    instances, images_dir = Path(instances), Path(images_dir)
    data = _read(instances)
    classes = select_categories(data["categories"], categories, instances)
    category_names = {c["id"]: str(c["name"]) for c in data["categories"]}
    names = {index: category_names[cid] for cid, index in classes.items()}
    images: dict[int, dict] = {}
    for i, record in enumerate(data["images"]):
        image_id = _field(record, "id", int, f"{instances}: image record {i}")
        where = f"{instances}: image {image_id}"
        _field(record, "file_name", str, where)
        _field(record, "height", int, where), _field(record, "width", int, where)
        if image_id in images:  # its boxes would be scored against the other image
            raise DatasetError(f"{where}: the id is given twice ({images[image_id]['file_name']!r} and "
                               f"{record['file_name']!r})")  # fmt: skip
        images[image_id] = record
    by_image: dict[int, list[dict]] = {}
    orphans = 0
    for i, record in enumerate(data["annotations"]):
        where = f"{instances}: annotation {record.get('id', i) if isinstance(record, dict) else i}"
        image_id = _field(record, "image_id", int, where)
        _field(record, "category_id", int, where)
        if image_id not in images:
            orphans += 1
            continue
        by_image.setdefault(image_id, []).append(record)
    if orphans:
        warnings.warn(f"{instances}: {orphans} annotation(s) of image ids without an image record left out",
                      stacklevel=2)  # fmt: skip
    ids = sorted(images)
    if categories is not None:
        ids = [i for i in ids if any(a["category_id"] in classes for a in by_image.get(i, []))]
    if image_ids is not None:
        unknown = sorted(set(image_ids) - set(images))
        if unknown:
            raise DatasetError(f"{instances}: no image(s) with id {unknown[:5]}")
        ids = [i for i in ids if i in set(image_ids)]
    if max_images is not None:
        if max_images < 1:
            raise DatasetError(f"max_images={max_images}: must be at least 1 (leave it out for all images)")
        ids = ids[:max_images]
    checker = LabelChecker(len(classes), on_error)
    annotations, resized = [], 0
    for image_id in ids:
        info = images[image_id]
        path = images_dir / info["file_name"]
        if not path.is_file():
            raise DatasetError(f"{path}: image file not found (image id {image_id} of {instances.name})")
        recorded, size = (info["height"], info["width"]), image_size(path)
        scale = np.array([size[1] / max(recorded[1], 1), size[0] / max(recorded[0], 1)] * 2, np.float32)
        resized += recorded != size
        boxes, labels = [], []
        for record in by_image.get(image_id, []):
            if record.get("iscrowd") or (categories is not None and record["category_id"] not in classes):
                continue
            where = f"{instances}: annotation {record.get('id')} (image {info['file_name']})"
            if record["category_id"] not in classes:
                checker.problem(where, f"category_id {record['category_id']} is not among the categories")
                continue
            box = _box(record, where)
            if checker.box_ok(where, classes[record["category_id"]], box, recorded):
                boxes.append(box)
                labels.append(classes[record["category_id"]])
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4) * scale
        annotations.append(Annotation(path, size, boxes, np.asarray(labels, np.int64)))
    if resized:
        warnings.warn(f"{instances}: {resized} image(s) differ in size from their record; their boxes were scaled "
                      f"to the files", stacklevel=2)  # fmt: skip
    if not annotations:
        raise DatasetError(f"{instances}: no images left in the subset asked for")
    return annotations, names
