"""Evaluation: run a detector over a dataset and score it with COCO metrics."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.dataset import Collate, DetectionDataset
from ..nn import Detector
from .coco_metrics import coco_metrics
from .cpu_memory import keep_freed_memory
from .predictor import check_finite, postprocess


@torch.inference_mode()
def predict_dataset(model: Detector, dataset: DetectionDataset, batch: int, device: torch.device,
                    workers: int = 0, dtype: torch.dtype = torch.float32) -> list[np.ndarray]:  # fmt: skip
    """Per image (K, 6) x1 y1 x2 y2 score class in the original image's pixels, K = the decoder's queries.

    dtype: the compute precision (autocast to it; weights stay as they are).
    """
    model.eval()
    if device.type == "cpu":
        keep_freed_memory()
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=workers, collate_fn=Collate())
    detections: list[np.ndarray] = []
    for images, targets in loader:
        with torch.autocast(device.type, dtype, enabled=dtype != torch.float32):
            outputs = model(images.to(device))
        check_finite(outputs, str(dataset.annotations[targets[0]["index"]].image), dtype)
        rows = postprocess(outputs["boxes"].float(), outputs["logits"].float(), outputs["boxes"].shape[1])
        for target, image_rows in zip(targets, rows.cpu()):
            height, width = target["orig_size"]
            image_rows[:, :4] *= torch.tensor([width, height, width, height])
            detections.append(image_rows.numpy())
    return detections


def evaluate(model: Detector, dataset: DetectionDataset, batch: int, device: torch.device, workers: int = 0,
             dtype: torch.dtype = torch.float32) -> tuple[dict[str, float], dict[int, float]]:  # fmt: skip
    """-> (COCO stats by name, per-class AP50-95) of `model` on `dataset`, computed in `dtype`."""
    detections = predict_dataset(model, dataset, batch, device, workers, dtype)
    return coco_metrics(dataset.annotations, detections, dataset.names)
