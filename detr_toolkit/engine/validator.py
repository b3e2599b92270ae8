"""Evaluation: run a model over a dataset and score it with COCO metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ..data.dataset import Collate, DetectionDataset, worker_start
from .coco_metrics import MAX_DETECTIONS, coco_metrics
from .predictor import Inference, check_finite, masks_at_size, postprocess


@torch.inference_mode()
def predict_dataset(
    model: Inference, dataset: DetectionDataset, batch: int, workers: int = 0, indices: Sequence[int] | None = None
) -> tuple[list[np.ndarray], list[list[dict]] | None]:
    """Per image (K, 6) x1 y1 x2 y2 score class in the pixels of the image's annotation (its recorded size), K = the
    model's queries; of the images at `indices` only (a rank's shard), in their order, if given. A segmentation
    model's masks too: per image, the first MAX_DETECTIONS rows' masks as COCO RLEs (what COCO's evaluator reads);
    None for a detector.

    model: a `TorchInference` (a PyTorch detector) or an `ExportedModel` (an exported file).
    """
    from faster_coco_eval.core import mask as coco_mask

    items = dataset if indices is None else Subset(dataset, list(indices))
    loader = DataLoader(items, batch_size=batch, shuffle=False, num_workers=workers, collate_fn=Collate(),
                        worker_init_fn=worker_start)  # fmt: skip
    detections: list[np.ndarray] = []
    masks: list[list[dict]] = []
    for images, targets in loader:
        boxes, scores, mask_logits = model(images.to(model.device, model.input_dtype))
        check_finite(boxes, scores, str(dataset.annotations[targets[0]["index"]].image), model.dtype)
        rows, queries = postprocess(boxes, scores, boxes.shape[1])
        for i, (target, image_rows) in enumerate(zip(targets, rows.cpu())):
            height, width = target["orig_size"]
            image_rows[:, :4] *= torch.tensor([width, height, width, height])
            detections.append(image_rows.numpy())
            if mask_logits is not None:
                image_masks = masks_at_size(mask_logits[i, queries[i, :MAX_DETECTIONS]], (height, width)).cpu()
                masks.append(coco_mask.encode(np.asfortranarray(image_masks.permute(1, 2, 0).numpy())))
    return detections, (masks if mask_logits is not None else None)


def evaluate(model: Inference, dataset: DetectionDataset, batch: int,
             workers: int = 0) -> tuple[dict[str, float], dict[int, float]]:  # fmt: skip
    """-> (COCO stats by name (a segmentation model's mask stats too), per-class box AP50-95) of `model` on
    `dataset`."""
    detections, masks = predict_dataset(model, dataset, batch, workers)
    return coco_metrics(dataset.annotations, detections, dataset.names, masks=masks)
