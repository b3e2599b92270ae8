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
from torchvision.ops import box_area, box_convert, generalized_box_iou_loss

from .matcher import HungarianMatcher

Matches = list[tuple[torch.Tensor, torch.Tensor]]


def varifocal_loss(logits: torch.Tensor, target_scores: torch.Tensor, labels: torch.Tensor, alpha: float,
                   gamma: float) -> torch.Tensor:  # fmt: skip
    """Varifocal loss (Zhang et al., VarifocalNet). Shapes: (L, B, Q, C) each -> (L,): per layer, the sum over B and
    C of the mean over queries. Positives weigh by their target score, negatives by alpha * p^gamma."""
    weight = alpha * logits.sigmoid().pow(gamma) * (1 - labels) + target_scores * labels
    loss = F.binary_cross_entropy_with_logits(logits.float(), target_scores.float(), reduction="none") * weight
    return loss.mean(2).sum((1, 2))


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al.), reduced as `varifocal_loss`; used when a batch holds no objects."""
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    p = logits.sigmoid()
    p_t = labels * p + (1 - labels) * (1 - p)
    loss = loss * (1 - p_t) ** gamma * (labels * alpha + (1 - labels) * (1 - alpha))
    return loss.mean(2).sum((1, 2))


def iou_aware_bce(logits: torch.Tensor, target_ious: torch.Tensor, labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """LW-DETR's IoU-aware BCE. Shapes: (L, B, Q, C) each -> (L,): per layer, the sum over everything else.

    A positive aims at quality q = p^alpha * IoU^(1 - alpha) (at least 0.01, no gradient through it) and is
    pushed down with weight 1 - q; a negative is pushed down with weight p^2.
    """
    p = logits.sigmoid()
    quality = (p.pow(alpha) * target_ious.pow(1 - alpha)).clamp(min=0.01).detach()
    positive = labels.bool()
    up = torch.where(positive, quality, 0.0)
    down = torch.where(positive, 1 - quality, p.pow(2))
    return -(up * F.logsigmoid(logits) + down * F.logsigmoid(-logits)).sum((1, 2, 3))


def paired_iou(boxes: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """IoU of each box with its partner (torchvision's `box_iou` gives all pairs). Shapes: (M, 4) xyxy twice -> (M,)."""
    wh = (torch.minimum(boxes[:, 2:], other[:, 2:]) - torch.maximum(boxes[:, :2], other[:, :2])).clamp(min=0)
    inter = wh.prod(-1)
    return inter / (box_area(boxes) + box_area(other) - inter)


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
    sum / objects). `matcher`: keyword arguments of `HungarianMatcher` (its costs).
    Every argument but `num_classes` comes from the `loss` section of the model's config (see `build_criterion`).
    """

    def __init__(
        self,
        num_classes: int,
        class_weight: float = 1.0,
        bbox_weight: float = 5.0,
        giou_weight: float = 2.0,
        alpha: float = 0.25,
        gamma: float = 1.5,
        matcher: dict[str, float] | None = None,
        class_loss: str = "varifocal",
    ):
        super().__init__()
        if class_loss not in CLASS_LOSSES:
            raise ValueError(f"class_loss={class_loss!r}: use one of {CLASS_LOSSES}")
        self.num_classes, self.class_loss = num_classes, class_loss
        self.weights = {"class": class_weight, "bbox": bbox_weight, "giou": giou_weight}
        self.alpha, self.gamma = alpha, gamma
        self.matcher = HungarianMatcher(**(matcher or {}))

    def match(self, boxes: torch.Tensor, logits: torch.Tensor, targets: list[dict], groups: int) -> Matches:
        """Hungarian matches of (..., B, Q, ...) predictions, per (leading index, image) as `HungarianMatcher`
        returns them; with query groups, each group is matched on its own, so every object is matched once per
        group (Group DETR)."""
        if groups == 1:
            return self.matcher(boxes, logits, targets)
        size = boxes.shape[-2] // groups
        per_group = [self.matcher(b, s, targets) for b, s in zip(boxes.split(size, -2), logits.split(size, -2))]
        return [
            (torch.cat([m[i][0] + g * size for g, m in enumerate(per_group)]), torch.cat([m[i][1] for m in per_group]))
            for i in range(len(per_group[0]))
        ]

    def stack_loss(self, boxes: torch.Tensor, logits: torch.Tensor, targets: list[dict], matches: Matches,
                   suffix: str) -> dict[str, torch.Tensor]:  # fmt: skip
        """Class, bbox and giou terms of L stacked sets of predictions (L, B, Q, ...), all layers in one pass.

        matches: per (layer, image), layer-major (L * B pairs of query and object indices). Returns the last
        layer's terms as `loss_{name}{suffix}` and the others summed as `loss_{name}_aux{suffix}`.
        """
        layers, batch = boxes.shape[:2]
        device = boxes.device
        image = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(matches)]).to(device)  # over L * B
        query = torch.cat([q for q, _ in matches]).to(device)
        layer, image_in_layer = image // batch, image % batch
        per_image = [targets[i % batch] for i in range(len(matches))]
        gt_boxes = torch.cat([t["boxes"][g.to(t["boxes"].device)] for t, (_, g) in zip(per_image, matches)])
        gt_labels = torch.cat([t["labels"][g.to(t["labels"].device)] for t, (_, g) in zip(per_image, matches)])
        num_objects = torch.bincount(layer, minlength=layers).clamp(min=1).to(boxes.dtype)  # matched pairs per layer
        matched = boxes[layer, image_in_layer, query]
        labels = torch.zeros_like(logits)
        labels[layer, image_in_layer, query, gt_labels] = 1
        scores = torch.zeros_like(logits)  # IoU of each matched query's box with its object, at its class
        per_layer = boxes.new_zeros(layers)
        if len(gt_boxes):
            xyxy, gt_xyxy = box_convert(matched, "cxcywh", "xyxy"), box_convert(gt_boxes, "cxcywh", "xyxy")
            scores[layer, image_in_layer, query, gt_labels] = paired_iou(xyxy.detach(), gt_xyxy).to(scores.dtype)
            l1 = F.l1_loss(matched, gt_boxes, reduction="none").sum(-1)
            bbox_loss = per_layer.index_add(0, layer, l1) / num_objects
            giou_loss = per_layer.index_add(0, layer, generalized_box_iou_loss(xyxy, gt_xyxy)) / num_objects
        else:
            bbox_loss = giou_loss = per_layer + boxes.sum() * 0  # keeps every parameter in the graph (DDP)
        if self.class_loss == "ia_bce":
            class_loss = iou_aware_bce(logits, scores, labels, self.alpha) / num_objects
        else:
            class_loss = (varifocal_loss(logits, scores, labels, self.alpha, self.gamma) if len(gt_boxes)
                          else focal_loss(logits, labels, self.alpha, self.gamma))  # fmt: skip
            class_loss = class_loss * logits.shape[2] / num_objects
        result = {}
        for name, values in (("class", class_loss), ("bbox", bbox_loss), ("giou", giou_loss)):
            values = values * self.weights[name]
            result[f"loss_{name}{suffix}"] = values[-1]
            if layers > 1:
                result[f"loss_{name}_aux{suffix}"] = values[:-1].sum()
        return result

    def forward(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        boxes = torch.cat([outputs["enc_boxes"][None], outputs["boxes"]])
        logits = torch.cat([outputs["enc_logits"][None], outputs["logits"]])
        matches = self.match(boxes, logits, targets, outputs.get("groups", 1))  # per (layer, image)
        losses = self.stack_loss(boxes, logits, targets, matches, "")
        meta = outputs.get("dn_meta")
        if meta is not None:
            matches = list(zip(meta["positive"], meta["target"])) * len(outputs["dn_boxes"])
            losses.update(self.stack_loss(outputs["dn_boxes"], outputs["dn_logits"], targets, matches, "_dn"))
        else:
            zero = outputs["boxes"].sum() * 0
            losses.update({f"{k}_dn": zero for k in list(losses)})
        return losses
