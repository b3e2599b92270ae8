"""COCO detection metrics through faster-coco-eval (COCOeval in C++, the numbers of pycocotools): our annotations
and detections in, COCOeval's numbers out; for a segmentation model, its masks' ("segm") too."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data.annotations import Annotation

# COCOeval.stats, in order.
STAT_NAMES = (
    "mAP50-95", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large",
)  # fmt: skip
MASK_STAT_NAMES = tuple(f"mask_{name}" for name in STAT_NAMES)  # the same, of the masks
MAX_DETECTIONS = 100  # per image, COCOeval's last maxDets: the detections it reads


def coco_ground_truth(annotations: Sequence[Annotation], names: dict[int, str]) -> dict:
    """A COCO instances dict of `annotations` (image ids 0..N-1, category ids = class indices), with each object's
    polygons as its `segmentation` (its box's outline where it has none)."""
    images, objects = [], []
    for image_id, annotation in enumerate(annotations):
        height, width = annotation.size
        images.append({"id": image_id, "file_name": str(annotation.image), "height": height, "width": width})
        segments = annotation.segments or [[]] * len(annotation.boxes)
        for box, cls, polygons in zip(annotation.boxes.tolist(), annotation.classes.tolist(), segments):
            x1, y1, x2, y2 = box
            outline = [p.ravel().tolist() for p in polygons] or [[x1, y1, x2, y1, x2, y2, x1, y2]]
            objects.append({
                "id": len(objects) + 1, "image_id": image_id, "category_id": int(cls), "iscrowd": 0,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "segmentation": outline,
            })  # fmt: skip
    categories = [{"id": int(i), "name": name} for i, name in names.items()]
    return {"images": images, "annotations": objects, "categories": categories}


def coco_detections(detections: Sequence[np.ndarray]) -> list[dict]:
    """Per image (N, 6) x1 y1 x2 y2 score class (pixels) -> COCO result records."""
    rows = [np.asarray(r, dtype=np.float64).reshape(-1, 6) for r in detections]
    if not rows or not sum(len(r) for r in rows):
        return []
    table = np.concatenate(rows)
    table[:, 2:4] -= table[:, 0:2]  # x y w h
    image_ids = np.repeat(np.arange(len(rows)), [len(r) for r in rows]).tolist()
    return [
        {"image_id": image_id, "category_id": cls, "bbox": bbox, "score": score}
        for image_id, bbox, score, cls in zip(image_ids, table[:, :4].tolist(), table[:, 4].tolist(),
                                              table[:, 5].astype(np.int64).tolist())
    ]  # fmt: skip


def coco_metrics(
    annotations: Sequence[Annotation],
    detections: Sequence[np.ndarray],
    names: dict[int, str],
    curves: dict[int, np.ndarray] | None = None,
    masks: Sequence[list[dict]] | None = None,
) -> tuple[dict[str, float], dict[int, float]]:
    """-> ({STAT_NAMES: value}, {class: AP50-95}) of the boxes; AP of a class without objects is nan, like
    COCOeval's -1. With `masks` (per image, the RLEs of its first detections, see `validator.predict_dataset`),
    the stats hold the masks' MASK_STAT_NAMES too, scored against the annotations' polygons.

    `curves`, if given, is filled with each class's precision at 101 recall points, IoU 0.5 (-1: no objects).
    """
    records = coco_detections(detections)
    if not records:
        empty = dict.fromkeys(STAT_NAMES + (MASK_STAT_NAMES if masks is not None else ()), 0.0)
        return empty, dict.fromkeys(names, 0.0)
    truth, evaluation = _evaluate(coco_ground_truth(annotations, names), records, "bbox")
    stats = {name: float(value) for name, value in zip(STAT_NAMES, evaluation.stats)}
    if masks is not None:
        # each image's first rows, those with masks
        rows = [np.reshape(image_rows, (-1, 6)) for image_rows in detections]
        if any(len(image_masks) > len(image_rows) for image_rows, image_masks in zip(rows, masks, strict=True)):
            raise ValueError("coco_metrics: an image has more masks than detection rows")
        masked = coco_detections([image_rows[: len(image_masks)] for image_rows, image_masks in zip(rows, masks)])
        rles = [rle for image_masks in masks for rle in image_masks]
        mask_records = [{**record, "segmentation": rle} for record, rle in zip(masked, rles, strict=True)]
        _, mask_evaluation = _evaluate(truth, mask_records, "segm")
        stats.update({name: float(value) for name, value in zip(MASK_STAT_NAMES, mask_evaluation.stats)})
    precision = evaluation.eval["precision"][:, :, :, 0, -1]  # (IoU, recall, class), all areas, 100 detections
    per_class = {}
    for k, cls in enumerate(evaluation.params.catIds):
        values = precision[:, :, k]
        values = values[values > -1]
        per_class[int(cls)] = float(values.mean()) if values.size else float("nan")
        if curves is not None:
            curves[int(cls)] = precision[0, :, k]
    return stats, per_class


def _evaluate(truth: dict | Any, records: list[dict], kind: str) -> tuple[Any, Any]:
    """COCOeval of `records` against `truth` (an instances dict, or a COCO made of one) for `kind` ("bbox",
    "segm") -> (the COCO ground truth, the evaluation, summarised)."""
    from faster_coco_eval import COCO, COCOeval_faster

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(truth) if isinstance(truth, dict) else truth
        evaluation = COCOeval_faster(truth, truth.loadRes(records), kind, print_function=lambda *_: None)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return truth, evaluation
