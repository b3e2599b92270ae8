"""The training loss of the RT-DETR family (as ultralytics' `RTDETRDetectionLoss` computes it) and of LW-DETR /
RF-DETR (as transformers' `LwDetrForObjectDetectionLoss` does: IoU-aware BCE, query groups).

For every set of predictions (each decoder layer, and the encoder's top-k proposals), queries are matched to
the objects, then:
    class: varifocal loss (RT-DETR) or IoU-aware BCE (LW-DETR); a matched query's target follows the IoU of
           its box with its object's
    bbox:  L1 between matched boxes (cxcywh, 0..1), summed over objects / number of objects
    giou:  1 - GIoU between matched boxes, likewise
Denoising queries (noised copies of the objects) skip matching: each is paired with the object it copies.
All terms are summed with weights {class: 1, bbox: 5, giou: 2}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, box_iou, generalized_box_iou_loss

from .matcher import HungarianMatcher

Matches = list[tuple[torch.Tensor, torch.Tensor]]


def varifocal_loss(logits: torch.Tensor, target_scores: torch.Tensor, labels: torch.Tensor, alpha: float,
                   gamma: float) -> torch.Tensor:  # fmt: skip
    """Varifocal loss (Zhang et al., VarifocalNet). Shapes: (B, Q, C) each -> scalar: sum over B and C of the mean
    over queries. Positives weigh by their target score, negatives by alpha * p^gamma."""
    weight = alpha * logits.sigmoid().pow(gamma) * (1 - labels) + target_scores * labels
    loss = F.binary_cross_entropy_with_logits(logits.float(), target_scores.float(), reduction="none") * weight
    return loss.mean(1).sum()


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al.), reduced as `varifocal_loss`; used when a batch holds no objects."""
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    p = logits.sigmoid()
    p_t = labels * p + (1 - labels) * (1 - p)
    loss = loss * (1 - p_t) ** gamma * (labels * alpha + (1 - labels) * (1 - alpha))
    return loss.mean(1).sum()


def iou_aware_bce(logits: torch.Tensor, target_ious: torch.Tensor, labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """LW-DETR's IoU-aware BCE. Shapes: (B, Q, C) each -> scalar sum over everything.

    A positive aims at quality q = p^alpha * IoU^(1 - alpha) (at least 0.01, no gradient through it) and is
    pushed down with weight 1 - q; a negative is pushed down with weight p^2.
    """
    p = logits.sigmoid()
    quality = (p.pow(alpha) * target_ious.pow(1 - alpha)).clamp(min=0.01).detach()
    positive = labels.bool()
    up = torch.where(positive, quality, 0.0)
    down = torch.where(positive, 1 - quality, p.pow(2))
    return -(up * F.logsigmoid(logits) + down * F.logsigmoid(-logits)).sum()


CLASS_LOSSES = ("varifocal", "ia_bce")


class DetectionCriterion(nn.Module):
    """Shapes: outputs of `RTDETRDecoder` in training mode, targets as for `HungarianMatcher` -> {name: scalar}.

    outputs: "boxes" (L, B, Q, 4) and "logits" (L, B, Q, C) for the L decoder layers; "enc_boxes" (B, Q, 4) and
    "enc_logits" (B, Q, C) for the proposals; optionally "dn_boxes" (L, B, D, 4), "dn_logits" (L, B, D, C) and
    "dn_meta" {"positive": per image (P,) denoising query indices, "target": per image (P,) object indices}.
    Keys of the result: loss_{class,bbox,giou} for the last layer, ..._aux for the other layers and the
    proposals, ..._dn for denoising (its last layer) and ..._aux_dn. With "groups": G (LW-DETR / RF-DETR's
    Group DETR), each of the G query groups is matched to the objects separately.
    `class_loss`: "varifocal" (RT-DETR; mean over queries, times queries / objects) or "ia_bce" (LW-DETR;
    sum / objects).
    """

    def __init__(
        self,
        num_classes: int,
        class_weight: float = 1.0,
        bbox_weight: float = 5.0,
        giou_weight: float = 2.0,
        alpha: float = 0.25,
        gamma: float = 1.5,
        matcher: HungarianMatcher | None = None,
        class_loss: str = "varifocal",
    ):
        super().__init__()
        if class_loss not in CLASS_LOSSES:
            raise ValueError(f"class_loss={class_loss!r}: use one of {CLASS_LOSSES}")
        self.num_classes, self.class_loss = num_classes, class_loss
        self.weights = {"class": class_weight, "bbox": bbox_weight, "giou": giou_weight}
        self.alpha, self.gamma = alpha, gamma
        self.matcher = matcher or HungarianMatcher()

    def layer_loss(self, boxes: torch.Tensor, logits: torch.Tensor, targets: list[dict], matches: Matches
                   ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Class, bbox and giou terms of one set of predictions (B, Q, ...) with given matches."""
        batch_index = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(matches)]).to(boxes.device)
        query_index = torch.cat([q for q, _ in matches]).to(boxes.device)
        matched = boxes[batch_index, query_index]
        gt_boxes = torch.cat([t["boxes"][g.to(t["boxes"].device)] for t, (_, g) in zip(targets, matches)])
        gt_labels = torch.cat([t["labels"][g.to(t["labels"].device)] for t, (_, g) in zip(targets, matches)])
        num_objects = len(gt_boxes)
        labels = torch.zeros_like(logits)
        labels[batch_index, query_index, gt_labels] = 1
        scores = torch.zeros_like(logits)  # IoU of each matched query's box with its object, at its class
        if num_objects:
            xyxy, gt_xyxy = box_convert(matched, "cxcywh", "xyxy"), box_convert(gt_boxes, "cxcywh", "xyxy")
            scores[batch_index, query_index, gt_labels] = box_iou(xyxy.detach(), gt_xyxy).diagonal().to(scores.dtype)
            bbox_loss = F.l1_loss(matched, gt_boxes, reduction="sum") / num_objects
            giou_loss = generalized_box_iou_loss(xyxy, gt_xyxy, reduction="sum") / num_objects
        else:
            bbox_loss = giou_loss = boxes.sum() * 0  # keeps every parameter in the graph (DDP)
        if self.class_loss == "ia_bce":
            class_loss = iou_aware_bce(logits, scores, labels, self.alpha) / max(num_objects, 1)
        else:
            class_loss = (varifocal_loss(logits, scores, labels, self.alpha, self.gamma) if num_objects
                          else focal_loss(logits, labels, self.alpha, self.gamma))  # fmt: skip
            class_loss = class_loss * logits.shape[1] / max(num_objects, 1)
        return {
            "class": class_loss * self.weights["class"],
            "bbox": bbox_loss * self.weights["bbox"],
            "giou": giou_loss * self.weights["giou"],
        }

    def match(self, boxes: torch.Tensor, logits: torch.Tensor, targets: list[dict], groups: int) -> Matches:
        """Hungarian matches of (B, Q, ...) predictions; with query groups, each group is matched on its own, so
        every object is matched once per group (Group DETR)."""
        if groups == 1:
            return self.matcher(boxes, logits, targets)
        size = boxes.shape[1] // groups
        per_group = [self.matcher(b, s, targets) for b, s in zip(boxes.split(size, 1), logits.split(size, 1))]
        return [
            (torch.cat([m[i][0] + g * size for g, m in enumerate(per_group)]), torch.cat([m[i][1] for m in per_group]))
            for i in range(len(targets))
        ]

    def stack_loss(self, boxes: torch.Tensor, logits: torch.Tensor, targets: list[dict], matches: Matches | None,
                   suffix: str, groups: int = 1) -> dict[str, torch.Tensor]:  # fmt: skip
        """Layers (L, B, Q, ...): the last one as the main terms, the others summed as `_aux`."""
        result: dict[str, torch.Tensor] = {}
        last = len(boxes) - 1
        for i, (layer_boxes, layer_logits) in enumerate(zip(boxes, logits)):
            layer_matches = matches if matches is not None else self.match(layer_boxes, layer_logits, targets, groups)
            key = suffix if i == last else f"_aux{suffix}"
            for name, value in self.layer_loss(layer_boxes, layer_logits, targets, layer_matches).items():
                result[f"loss_{name}{key}"] = result.get(f"loss_{name}{key}", 0) + value
        return result

    def forward(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        boxes = torch.cat([outputs["enc_boxes"][None], outputs["boxes"]])
        logits = torch.cat([outputs["enc_logits"][None], outputs["logits"]])
        losses = self.stack_loss(boxes, logits, targets, None, "", outputs.get("groups", 1))
        meta = outputs.get("dn_meta")
        if meta is not None:
            matches = list(zip(meta["positive"], meta["target"]))
            losses.update(self.stack_loss(outputs["dn_boxes"], outputs["dn_logits"], targets, matches, "_dn"))
        else:
            zero = outputs["boxes"].sum() * 0
            losses.update({f"{k}_dn": zero for k in list(losses)})
        return losses
