"""Confusion matrix of detections against ground truth, as detection toolkits draw it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from ..data.annotations import Annotation


def confusion_matrix(annotations: Sequence[Annotation], detections: Sequence[np.ndarray], num_classes: int,
                     conf: float = 0.25, iou: float = 0.5) -> np.ndarray:  # fmt: skip
    """(nc + 1, nc + 1) counts: rows the predicted class, columns the true class; the last row/column is background
    (a missed object / a false detection). Detections above `conf` are paired greedily to objects by IoU >= `iou`."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for annotation, rows in zip(annotations, detections):
        rows = rows[rows[:, 4] > conf]
        gt_classes = annotation.classes.astype(int)
        matched_gt, matched_pred = set(), set()
        if len(rows) and len(gt_classes):
            overlaps = box_iou(torch.as_tensor(rows[:, :4]), torch.as_tensor(annotation.boxes)).numpy()
            pairs = np.argwhere(overlaps >= iou)
            for p, g in sorted(pairs.tolist(), key=lambda pg: -overlaps[pg[0], pg[1]]):
                if p not in matched_pred and g not in matched_gt:
                    matched_pred.add(p), matched_gt.add(g)
                    matrix[int(rows[p, 5]), gt_classes[g]] += 1
        for g, cls in enumerate(gt_classes):
            if g not in matched_gt:
                matrix[num_classes, cls] += 1
        for p in range(len(rows)):
            if p not in matched_pred:
                matrix[int(rows[p, 5]), num_classes] += 1
    return matrix
