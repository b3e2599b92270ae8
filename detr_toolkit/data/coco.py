"""COCO-format datasets: an instances JSON and its image folder, optionally a subset of it.

A subset keeps the given categories (names or ids; their classes renumbered 0..n-1 in that order) and the
images holding at least one of them, then the given image ids and/or the first `max_images` by id:
`load_coco("instances_val2017.json", "val2017/", categories=["person", "car"], max_images=500)`.
Crowd boxes (`iscrowd`) are left out, as COCO's evaluator ignores them. An annotation's `segmentation` (polygons,
or an RLE, whose outlines are traced) becomes its segments, for instance segmentation.

Every record is checked (a missing or malformed field names the record), and nothing is dropped silently:
annotations of an image id without an image record are counted and warned about. Image files are not opened here
(COCO train has 118k): an image whose recorded size differs from its file is told of where it is read, its boxes
scaled to the file (`DetectionDataset`), and the annotations are held in flat arrays (`AnnotationTable`).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import DatasetError
from .annotation_table import AnnotationTable
from .annotations import EDGE_TOLERANCE, LabelChecker


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


def _image_records(records: list, instances: Path) -> dict[int, dict]:
    """{image id: record}, each record's fields checked."""
    images: dict[int, dict] = {}
    for i, record in enumerate(records):
        image_id = _field(record, "id", int, f"{instances}: image record {i}")
        where = f"{instances}: image {image_id}"
        _field(record, "file_name", str, where)
        _field(record, "height", int, where), _field(record, "width", int, where)
        if image_id in images:  # its boxes would be scored against the other image
            raise DatasetError(f"{where}: the id is given twice ({images[image_id]['file_name']!r} and "
                               f"{record['file_name']!r})")  # fmt: skip
        images[image_id] = record
    return images


def _annotation_columns(records: list, images: dict[int, dict], wanted: set[int] | None, instances: Path
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(image ids, category ids, crowd flags, boxes (M, 4) x1 y1 x2 y2) of the annotation records, checked.

    A bbox is checked where it is used (an image with a record, not crowd, of a `wanted` category): a fast pass
    over the whole list first, and a record by record one, naming the culprit, when that finds anything amiss."""
    try:
        image_ids = [r["image_id"] for r in records]
        category_ids = [r["category_id"] for r in records]
        boxes = np.array([r["bbox"] for r in records])
        if (
            all(type(v) is int for v in image_ids)
            and all(type(v) is int for v in category_ids)
            and boxes.dtype.kind in "iuf"
            and boxes.shape == (len(records), 4)
            and np.isfinite(boxes).all()
        ):
            crowd = np.array([bool(r.get("iscrowd")) for r in records], bool)
            boxes = boxes.astype(np.float64).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]
            return np.array(image_ids, np.int64), np.array(category_ids, np.int64), crowd, boxes
    except (KeyError, TypeError, ValueError):
        pass
    columns = ([], [], [], [])
    for i, record in enumerate(records):  # record by record: the first bad field is named
        where = f"{instances}: annotation {record.get('id', i) if isinstance(record, dict) else i}"
        image_id = _field(record, "image_id", int, where)
        category_id = _field(record, "category_id", int, where)
        crowd = bool(record.get("iscrowd"))
        used = image_id in images and not crowd and (wanted is None or category_id in wanted)
        box = _box(record, f"{where} (image {images[image_id]['file_name']})") if used else (np.nan,) * 4
        for column, value in zip(columns, (image_id, category_id, crowd, box)):
            column.append(value)
    image_ids, category_ids, crowd, boxes = columns
    return (np.array(image_ids, np.int64), np.array(category_ids, np.int64), np.array(crowd, bool),
            np.array(boxes, np.float64).reshape(-1, 4))  # fmt: skip


def load_coco(
    instances: str | Path,
    images_dir: str | Path,
    categories: Sequence[str | int] | None = None,
    image_ids: Sequence[int] | None = None,
    max_images: int | None = None,
    on_error: str = "error",
) -> tuple[AnnotationTable, dict[int, str]]:
    """-> (the kept images' annotations, class names); see the module docstring for subsets. Image files are
    checked to exist, not opened: their sizes are checked where they are read (`DetectionDataset`)."""
    instances, images_dir = Path(instances), Path(images_dir)
    data = _read(instances)
    classes = select_categories(data["categories"], categories, instances)
    category_names = {c["id"]: str(c["name"]) for c in data["categories"]}
    names = {index: category_names[cid] for cid, index in classes.items()}
    images = _image_records(data["images"], instances)
    records = data["annotations"]
    wanted = set(classes) if categories is not None else None
    record_images, record_categories, crowd, boxes = _annotation_columns(records, images, wanted, instances)

    known_ids = np.array(sorted(images), np.int64)
    known = np.isin(record_images, known_ids)
    if orphans := int((~known).sum()):
        warnings.warn(f"{instances}: {orphans} annotation(s) of image ids without an image record left out",
                      stacklevel=2)  # fmt: skip
    category_keys = np.array(sorted(classes), np.int64)
    in_classes = np.isin(record_categories, category_keys)
    ids = known_ids
    if categories is not None:
        ids = np.intersect1d(ids, record_images[known & in_classes])
    if image_ids is not None:
        unknown = sorted(set(image_ids) - set(images))
        if unknown:
            raise DatasetError(f"{instances}: no image(s) with id {unknown[:5]}")
        ids = ids[np.isin(ids, np.array(list(image_ids), np.int64))]
    if max_images is not None:
        if max_images < 1:
            raise DatasetError(f"max_images={max_images}: must be at least 1 (leave it out for all images)")
        ids = ids[:max_images]

    # The records of the kept images, in image order (then file order), crowd boxes and other categories left out.
    position = np.searchsorted(ids, record_images).clip(0, max(len(ids) - 1, 0))
    selected = known & ~crowd & (ids[position] == record_images) if len(ids) else np.zeros(len(records), bool)
    if categories is not None:
        selected &= in_classes
    order = np.flatnonzero(selected)
    order = order[np.argsort(position[order], kind="stable")]
    if not len(ids):
        raise DatasetError(f"{instances}: no images left in the subset asked for")
    sizes = np.array([(images[i]["height"], images[i]["width"]) for i in ids.tolist()], np.int64)
    checker = LabelChecker(len(classes), on_error)
    keep = _checked_boxes(order, records, images, record_images, record_categories, boxes, in_classes,
                          sizes[position[order]], classes, checker, instances)  # fmt: skip
    order = order[keep]
    class_of = np.array([classes[cid] for cid in category_keys.tolist()], np.int64)
    labels = class_of[np.searchsorted(category_keys, record_categories[order])]
    paths = [images_dir / images[i]["file_name"] for i in ids.tolist()]
    for image_id, path in zip(ids.tolist(), paths):
        if not path.is_file():
            raise DatasetError(f"{path}: image file not found (image id {image_id} of {instances.name})")
    counts = np.bincount(position[order], minlength=len(ids))
    segments = _segments(order, records, sizes[position[order]], checker, instances)
    return AnnotationTable(paths, sizes, boxes[order], labels, counts, segments), names


def _segments(order: np.ndarray, records: list, sizes: np.ndarray, checker: LabelChecker,
              instances: Path) -> list[list[np.ndarray]] | None:  # fmt: skip
    """The polygons (K, 2) x y pixels of each record at `order` ([] where it has none, or a malformed one, told
    through `checker`), or None when none of them has a `segmentation`."""
    if not any(records[i].get("segmentation") for i in order.tolist()):
        return None
    segments = []
    for index, (height, width) in zip(order.tolist(), sizes.tolist()):
        segmentation = records[index].get("segmentation")
        try:
            segments.append(_polygons(segmentation, height, width) if segmentation else [])
        except (TypeError, ValueError) as error:
            checker.problem(f"{instances}: annotation {records[index].get('id')}", f"malformed segmentation ({error})")
            segments.append([])
    return segments


def _polygons(segmentation: Any, height: int, width: int) -> list[np.ndarray]:
    """A COCO `segmentation`: polygons [[x1, y1, x2, y2, ...], ...] or an RLE {"size", "counts"} -> polygons (K, 2);
    ValueError when it is neither."""
    if isinstance(segmentation, dict):
        from faster_coco_eval.core import mask as coco_mask

        if list(segmentation.get("size", [])) != [height, width] or not isinstance(segmentation.get("counts"),
                                                                                     (list, str)):  # fmt: skip
            raise ValueError(f"not an RLE of this {width}x{height} image's size (size {segmentation.get('size')})")
        counts = segmentation["counts"]
        rle = coco_mask.frPyObjects(segmentation, height, width) if isinstance(counts, list) else segmentation
        decoded = coco_mask.decode(rle)
        contours = cv2.findContours(decoded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
        return [c.reshape(-1, 2).astype(np.float32) for c in contours if len(c) >= 3]
    if not isinstance(segmentation, list):
        raise TypeError(f"expected polygons or an RLE, got {type(segmentation).__name__}")
    polygons = []
    for polygon in segmentation:
        points = np.asarray(polygon, np.float64)
        if points.ndim != 1 or len(points) < 6 or len(points) % 2 or not np.isfinite(points).all():
            raise ValueError("a polygon must be a flat list of 3 or more x, y pairs of finite numbers")
        polygons.append(points.reshape(-1, 2).astype(np.float32))
    return polygons


def _checked_boxes(order: np.ndarray, records: list, images: dict[int, dict], record_images: np.ndarray,
                   record_categories: np.ndarray, boxes: np.ndarray, in_classes: np.ndarray, sizes: np.ndarray,
                   classes: dict[int, int], checker: LabelChecker, instances: Path) -> np.ndarray:  # fmt: skip
    """Which of the records at `order` (their images' recorded `sizes`: (len(order), 2) height, width) hold a valid
    box of a known category: checked all at once, the failures one by one through `checker` (an error, or a
    warning and the box left out)."""
    heights, widths = sizes.T
    x1, y1, x2, y2 = boxes[order].T
    keep = (
        in_classes[order]
        & (x2 > x1) & (y2 > y1)
        & (np.minimum(x1, y1) >= -EDGE_TOLERANCE) & (x2 <= widths + EDGE_TOLERANCE) & (y2 <= heights + EDGE_TOLERANCE)
    )  # fmt: skip
    for row in np.flatnonzero(~keep):
        index = int(order[row])
        record, image = records[index], images[int(record_images[index])]
        where = f"{instances}: annotation {record.get('id')} (image {image['file_name']})"
        if not in_classes[index]:
            checker.problem(where, f"category_id {record_categories[index]} is not among the categories")
        else:
            box = tuple(boxes[index].tolist())
            checker.box_ok(where, classes[int(record_categories[index])], box, (image["height"], image["width"]))
    return keep
