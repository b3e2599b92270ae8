"""The training loss of the RT-DETR family (the values ultralytics' `RTDETRDetectionLoss` computes; the gradients of
the official criterion, which, unlike ultralytics', detaches the varifocal weight), of D-FINE and DEIM (their
official criteria), and of LW-DETR / RF-DETR (as transformers' `LwDetrForObjectDetectionLoss` does).

For every set of predictions (each decoder layer, D-FINE's first-layer boxes, the encoder's top-k proposals),
queries are matched to the objects, then:
    class: varifocal loss (RT-DETR, D-FINE), matchability-aware loss (DEIM) or IoU-aware BCE (LW-DETR); a matched
           query's target follows the IoU of its box with its object's
    bbox:  L1 between matched boxes (cxcywh, 0..1), summed over objects / number of objects
    giou:  1 - GIoU between matched boxes, likewise
    fgl, ddf: D-FINE's losses on edge distributions (see `distribution`), for the decoder layers
    mask, dice: a segmentation model's (outputs "masks", targets "masks"): binary cross-entropy and dice between
           each matched query's mask logits and its object's mask at `mask_points` points (Mask2Former's point
           sampling: `mask_importance` of them the most uncertain, |logit| smallest, of `mask_oversample` times as
           many random points; the rest random), for the last layer's matches; summed over objects / number of objects
With `union_matching` (D-FINE's GO-LSD, DEIM's dense one-to-one), the box terms of every set use the union of
all sets' matches; the class terms keep each set's own.
Denoising queries (noised copies of the objects) skip matching: each is paired with the object it copies.
All terms are summed with the config's weights.

The sets follow the official D-FINE / DEIM criteria. transformers' loss functions compute the same terms
(tests/test_loss.py), but its `DFineForObjectDetectionLoss` / `Deimv2ForObjectDetectionLoss` wrappers pair layer
i's logits with layer i + 1's distributions and give the last layer no FGL. One choice is transformers': the DDF of
denoising layers is balanced by their own matched / unmatched counts (the official code reuses the regular queries').
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_area, box_convert, generalized_box_iou_loss

from ..distributed import mean_over_ranks
from .distribution import bin_targets, distillation_loss, edge_distances, localization_loss
from .matcher import HungarianMatcher, Matches, union_of_matches, values_at


def varifocal_loss(logits: torch.Tensor, target_scores: torch.Tensor, labels: torch.Tensor, alpha: float,
                   gamma: float) -> torch.Tensor:  # fmt: skip
    """Varifocal loss (Zhang et al., VarifocalNet). Shapes: (L, B, Q, C) each -> (L,): per layer, the sum over B and
    C of the mean over queries. Positives weigh by their target score, negatives by alpha * p^gamma."""
    weight = alpha * logits.sigmoid().detach().pow(gamma) * (1 - labels) + target_scores * labels
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


def matchability_aware_loss(logits: torch.Tensor, target_ious: torch.Tensor, labels: torch.Tensor, alpha: float,
                            gamma: float) -> torch.Tensor:  # fmt: skip
    """DEIM's MAL (Huang et al., 2025). Shapes and reduction as `varifocal_loss`.

    A positive aims at IoU^gamma with weight 1, so low-quality matches still learn to score; a negative is pushed
    down with weight alpha * p^gamma.
    """
    weight = alpha * logits.sigmoid().detach().pow(gamma) * (1 - labels) + labels
    loss = F.binary_cross_entropy_with_logits(logits.float(), target_ious.pow(gamma).float(), reduction="none")
    return (loss * weight).mean(2).sum((1, 2))


def paired_iou(boxes: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """IoU of each box with its partner (torchvision's `box_iou` gives all pairs). Shapes: (M, 4) xyxy twice -> (M,)."""
    wh = (torch.minimum(boxes[:, 2:], other[:, 2:]) - torch.maximum(boxes[:, :2], other[:, :2])).clamp(min=0)
    inter = wh.prod(-1)
    return inter / (box_area(boxes) + box_area(other) - inter)


CLASS_LOSSES = ("varifocal", "mal", "ia_bce")


class DetectionCriterion(nn.Module):
    """Shapes: outputs of a decoder in training mode, targets as for `HungarianMatcher` -> {name: scalar}.

    outputs: "boxes" (L, B, Q, 4) and "logits" (L, B, Q, C) for the L decoder layers; "enc_boxes" (B, Q, 4) and
    "enc_logits" (B, Q, C) for the proposals; optionally "dn_boxes" (L, B, D, 4), "dn_logits" (L, B, D, C) and
    "dn_meta" {"positive": per image (P,) denoising query indices, "target": per image (P,) object indices}.
    D-FINE's decoders add "pre_boxes"/"pre_logits" (B, Q, ...) (layer 0's initial boxes, an extra set),
    "corners" (L, B, Q, 4 * (R + 1)) edge-distribution logits, "references" (B, Q, 4) the boxes they are measured
    from, "bin_values" (R + 1,) and "reg_scale"; each with its "dn_" counterpart.
    Keys of the result: loss_{class,bbox,giou} (and loss_fgl when `fgl_weight` or `ddf_weight` is set and the
    decoder has edge distributions; other decoders ignore those weights) for the last layer, ..._aux for
    the other sets (loss_ddf_aux with `ddf_weight`), ..._dn for denoising (its last layer) and ..._aux_dn. With
    "groups": G (LW-DETR / RF-DETR's Group DETR), each of the G query groups is matched to the objects separately.
    With "masks" (B, Q', h, w) (a segmentation model's, of its last layer), also loss_mask and loss_dice.
    `class_loss`: "varifocal" (RT-DETR, D-FINE), "mal" (DEIM; mean over queries, times queries / objects) or
    "ia_bce" (LW-DETR; sum / objects). `matcher`: keyword arguments of `HungarianMatcher` (its costs).
    Every argument but `num_classes` comes from the `loss` section of the model's config (see `build_criterion`).

    A one-to-many branch (outputs["one_to_many"], the same names over its own queries; H-DETR's hybrid matching)
    is matched to `one_to_many_copies` copies of every image's objects and adds all of its terms, suffixed _o2m and
    times `one_to_many_weight` (training settings, which the trainer sets).
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
        fgl_weight: float = 0.0,
        ddf_weight: float = 0.0,
        distill_temperature: float = 5.0,
        union_matching: bool = False,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        mask_points: int = 12544,
        mask_importance: float = 0.75,
        mask_oversample: int = 3,
    ):
        super().__init__()
        if class_loss not in CLASS_LOSSES:
            raise ValueError(f"class_loss={class_loss!r}: use one of {CLASS_LOSSES}")
        self.num_classes, self.class_loss = num_classes, class_loss
        self.weights = {"class": class_weight, "bbox": bbox_weight, "giou": giou_weight, "fgl": fgl_weight,
                        "ddf": ddf_weight, "mask": mask_weight, "dice": dice_weight}  # fmt: skip
        if not 0 <= mask_importance <= 1 or mask_oversample < 1:
            raise ValueError(f"mask_importance={mask_importance} (0..1), mask_oversample={mask_oversample} (>= 1)")
        self.mask_points, self.mask_importance, self.mask_oversample = mask_points, mask_importance, mask_oversample
        self.alpha, self.gamma = alpha, gamma
        self.distill_temperature = distill_temperature
        self.one_to_many_copies, self.one_to_many_weight = 1, 1.0
        self.union_matching = union_matching
        self.matcher = HungarianMatcher(**(matcher or {}))

    def match(self, boxes: torch.Tensor, logits: torch.Tensor, targets: list[dict], groups: int,
              masks: torch.Tensor | None = None) -> Matches:  # fmt: skip
        """Hungarian matches of (..., B, Q, ...) predictions, per (leading index, image) as `HungarianMatcher`
        returns them; with query groups, each group is matched on its own, so every object is matched once per
        group (Group DETR). masks: the last set's mask logits (B, Q', h, w), of the first group's queries."""
        if groups == 1:
            return self.matcher(boxes, logits, targets, masks)
        size = boxes.shape[-2] // groups
        per_group = [self.matcher(b, s, targets, masks if g == 0 else None)
                     for g, (b, s) in enumerate(zip(boxes.split(size, -2), logits.split(size, -2)))]  # fmt: skip
        return [
            (torch.cat([m[i][0] + g * size for g, m in enumerate(per_group)]), torch.cat([m[i][1] for m in per_group]))
            for i in range(len(per_group[0]))
        ]

    @staticmethod
    def pairs(matches: Matches, targets: list[dict], batch: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Matches per (set, image), set-major -> flat (M,) "set", "image", "query", "label" and (M, 4) "boxes"."""
        per_image = [targets[i % batch] for i in range(len(matches))]
        index = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(matches)]).to(device)
        return {
            "set": index // batch,
            "image": index % batch,
            "query": torch.cat([q for q, _ in matches]).to(device),
            "boxes": torch.cat([t["boxes"][g.to(t["boxes"].device)] for t, (_, g) in zip(per_image, matches)]),
            "label": torch.cat([t["labels"][g.to(t["labels"].device)] for t, (_, g) in zip(per_image, matches)]),
        }

    @staticmethod
    def objects_per_set(pairs: dict, sets: int) -> torch.Tensor:
        """Matched pairs per set (S,), averaged over the DDP ranks: what the terms are divided by (see
        `distributed`)."""
        return mean_over_ranks(torch.bincount(pairs["set"], minlength=sets).float())

    def class_terms(self, boxes: torch.Tensor, logits: torch.Tensor, pairs: dict, counts: torch.Tensor
                    ) -> torch.Tensor:  # fmt: skip
        """Class loss per set (S,) of (S, B, Q, ...) predictions, divided by each set's matched pairs `counts`."""
        queries = logits.shape[2]
        where = (pairs["set"], pairs["image"], pairs["query"], pairs["label"])
        num_objects = counts.clamp(min=1)
        labels = torch.zeros_like(logits)
        labels[where] = 1
        ious = torch.zeros_like(logits)  # IoU of each matched query's box with its object, at its class
        if len(pairs["query"]):
            matched = boxes[pairs["set"], pairs["image"], pairs["query"]].detach()
            ious[where] = paired_iou(box_convert(matched, "cxcywh", "xyxy"),
                                     box_convert(pairs["boxes"], "cxcywh", "xyxy")).to(ious.dtype)  # fmt: skip
        if self.class_loss == "ia_bce":
            return iou_aware_bce(logits, ious, labels, self.alpha) / num_objects
        if self.class_loss == "mal":
            loss = matchability_aware_loss(logits, ious, labels, self.alpha, self.gamma)
        elif counts.sum() > 0:  # objects in the (global) batch, if not in this rank's share
            loss = varifocal_loss(logits, ious, labels, self.alpha, self.gamma)
        else:
            loss = focal_loss(logits, labels, self.alpha, self.gamma)
        return loss * queries / num_objects

    def box_terms(self, boxes: torch.Tensor, pairs: dict, counts: torch.Tensor, local: dict | None
                  ) -> dict[str, torch.Tensor]:  # fmt: skip
        """bbox and giou per set (S,) (and fgl, ddf for the sets with edge distributions, see `forward`), divided
        by each set's matched pairs `counts`."""
        sets = boxes.shape[0]
        num_objects = counts.clamp(min=1)
        zero = boxes.new_zeros(sets)
        if not len(pairs["query"]):
            terms = {"bbox": zero + boxes.sum() * 0, "giou": zero + boxes.sum() * 0}  # every parameter in the graph
        else:
            matched = boxes[pairs["set"], pairs["image"], pairs["query"]]
            xyxy, gt_xyxy = box_convert(matched, "cxcywh", "xyxy"), box_convert(pairs["boxes"], "cxcywh", "xyxy")
            terms = {
                "bbox": zero.index_add(0, pairs["set"], F.l1_loss(matched, pairs["boxes"], reduction="none").sum(-1)),
                "giou": zero.index_add(0, pairs["set"], generalized_box_iou_loss(xyxy, gt_xyxy)),
            }
            terms = {k: v / num_objects for k, v in terms.items()}
        if local is not None:
            terms.update(self.distribution_terms(boxes, pairs, local, num_objects))
        return terms

    def distribution_terms(self, boxes: torch.Tensor, pairs: dict, local: dict,
                           num_objects: torch.Tensor) -> dict[str, torch.Tensor]:  # fmt: skip
        """FGL and DDF per set (S,) for the last L sets (the decoder layers, whose corners are local["corners"]
        (L, B, Q, 4 * (R + 1))); the teacher of DDF is the last layer, whose own DDF is zero."""
        corners = local["corners"].unflatten(-1, (4, -1))
        sets, layers = boxes.shape[0], corners.shape[0]
        first_layer = sets - layers
        fgl = boxes.new_zeros(sets) + corners.sum() * 0
        in_layers = pairs["set"] >= first_layer
        layer, image, query = (
            pairs["set"][in_layers] - first_layer,
            pairs["image"][in_layers],
            pairs["query"][in_layers],
        )
        gt_boxes = pairs["boxes"][in_layers]
        ious = paired_iou(box_convert(boxes[layer + first_layer, image, query].detach(), "cxcywh", "xyxy"),
                          box_convert(gt_boxes, "cxcywh", "xyxy"))  # fmt: skip
        if len(query):
            with torch.no_grad():
                distances = edge_distances(local["references"][image, query].detach(),
                                           box_convert(gt_boxes, "cxcywh", "xyxy"), local["reg_scale"])  # fmt: skip
                targets = bin_targets(distances, local["bin_values"].to(distances.dtype))
            per_pair = localization_loss(corners[layer, image, query], targets, ious)
            fgl = fgl.index_add(0, layer + first_layer, per_pair) / num_objects
        weights = local["teacher_logits"].detach().sigmoid().amax(-1).expand(layers - 1, -1, -1).clone()
        matched = torch.zeros_like(weights, dtype=torch.bool)
        students = layer < layers - 1
        matched[layer[students], image[students], query[students]] = True
        weights[layer[students], image[students], query[students]] = ious[students].to(weights.dtype)
        ddf = distillation_loss(corners[:-1], corners[-1], weights, matched, self.distill_temperature)
        return {"fgl": fgl, "ddf": torch.cat([boxes.new_zeros(first_layer), ddf, boxes.new_zeros(1)])}

    def mask_terms(self, masks: torch.Tensor, matches: Matches, targets: list[dict]) -> dict[str, torch.Tensor]:
        """loss_mask, loss_dice of mask logits (B, Q', h, w) for one set's matches (per image: query and object
        indices; queries beyond Q' (Group DETR's other groups) have no masks and are left out) against the targets'
        "masks" (n, H, W), compared at `mask_points` points of the image (`mask_sample_points`), the same for a mask
        and its object's; divided by the (global) number of matched objects."""
        queries, device = masks.shape[1], masks.device
        picked, wanted = [], []  # per image: its matched queries' mask logits (m, h, w), their objects' (m, H, W)
        for image, ((query, objects), target) in enumerate(zip(matches, targets)):
            keep = query < queries
            picked.append(masks[image, query[keep].to(device)])
            wanted.append(target["masks"][objects[keep].to(target["masks"].device)])
        picked, wanted = torch.cat(picked), torch.cat(wanted)
        count = mean_over_ranks(torch.tensor([float(len(picked))], device=device)).clamp(min=1)
        if not len(picked):
            zero = masks.sum() * 0  # every parameter in the graph
            return {"loss_mask": zero, "loss_dice": zero}
        points = self.mask_sample_points(picked)
        logits, truth = values_at(picked, points), values_at(wanted, points)
        bce = F.binary_cross_entropy_with_logits(logits, truth, reduction="none").mean(1)
        p = logits.sigmoid()
        dice = 1 - (2 * (p * truth).sum(1) + 1) / (p.sum(1) + truth.sum(1) + 1)
        return {"loss_mask": bce.sum() / count * self.weights["mask"],
                "loss_dice": dice.sum() / count * self.weights["dice"]}  # fmt: skip

    def mask_sample_points(self, logits: torch.Tensor) -> torch.Tensor:
        """(M, 1, mask_points, 2) points in -1..1 (grid_sample's x, y) at which to compare each of the (M, h, w) mask
        logits with its object's mask: `mask_importance` of them where the logits are least certain (nearest 0)
        among `mask_oversample` x `mask_points` random points, the others random (Mask2Former's, RF-DETR's)."""
        count, device = self.mask_points, logits.device
        uncertain = round(self.mask_importance * count)
        random = torch.rand(len(logits), 1, count - uncertain, 2, device=device) * 2 - 1
        if not uncertain:
            return random
        candidates = torch.rand(len(logits), 1, count * self.mask_oversample, 2, device=device) * 2 - 1
        with torch.no_grad():
            values = values_at(logits.detach(), candidates)
        chosen = values.abs().topk(uncertain, dim=1, largest=False).indices  # (M, uncertain)
        return torch.cat([candidates.gather(2, chosen[:, None, :, None].expand(-1, -1, -1, 2)), random], 2)

    def stack_loss(self, boxes: torch.Tensor, logits: torch.Tensor, targets: list[dict], matches: Matches,
                   suffix: str, box_matches: Matches | None = None, local: dict | None = None
                   ) -> dict[str, torch.Tensor]:  # fmt: skip
        """All terms of S stacked sets of predictions (S, B, Q, ...), all sets in one pass.

        matches: per (set, image), set-major (S * B pairs of query and object indices), for the class terms;
        box_matches (the same by default) for the box terms. Returns the last set's terms as `loss_{name}{suffix}`
        and the others summed as `loss_{name}_aux{suffix}`.
        """
        sets, batch = boxes.shape[:2]
        class_pairs = self.pairs(matches, targets, batch, boxes.device)
        class_counts = self.objects_per_set(class_pairs, sets)
        box_pairs, box_counts = class_pairs, class_counts
        if box_matches is not None:
            box_pairs = self.pairs(box_matches, targets, batch, boxes.device)
            box_counts = self.objects_per_set(box_pairs, sets)
        terms = {"class": self.class_terms(boxes, logits, class_pairs, class_counts),
                 **self.box_terms(boxes, box_pairs, box_counts, local)}  # fmt: skip
        result = {}
        for name, values in terms.items():
            values = values * self.weights[name]
            if name != "ddf":  # the last layer is DDF's teacher
                result[f"loss_{name}{suffix}"] = values[-1]
            if len(values) > 1:
                result[f"loss_{name}_aux{suffix}"] = values[:-1].sum()
        return result

    def local_inputs(self, outputs: dict, prefix: str) -> dict | None:
        """What the distribution terms need of a decoder's outputs (None for decoders without distributions, or
        with those terms off)."""
        if not (self.weights["fgl"] or self.weights["ddf"]) or f"{prefix}corners" not in outputs:
            return None
        return {"corners": outputs[f"{prefix}corners"], "references": outputs[f"{prefix}references"],
                "teacher_logits": outputs[f"{prefix}logits"][-1], "bin_values": outputs["bin_values"],
                "reg_scale": outputs["reg_scale"]}  # fmt: skip

    def forward(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        first = [outputs["enc_boxes"][None]], [outputs["enc_logits"][None]]
        if "pre_boxes" in outputs:
            first[0].append(outputs["pre_boxes"][None])
            first[1].append(outputs["pre_logits"][None])
        boxes, logits = torch.cat([*first[0], outputs["boxes"]]), torch.cat([*first[1], outputs["logits"]])
        matches = self.match(boxes, logits, targets, outputs.get("groups", 1), outputs.get("masks"))  # (set, image)
        box_matches = None
        if self.union_matching:
            box_matches = union_of_matches(matches, boxes.shape[1]) * len(boxes)
        losses = self.stack_loss(boxes, logits, targets, matches, "", box_matches, self.local_inputs(outputs, ""))
        if "masks" in outputs:
            losses.update(self.mask_terms(outputs["masks"], matches[-len(targets) :], targets))
        meta = outputs.get("dn_meta")
        if meta is not None:
            boxes, logits = outputs["dn_boxes"], outputs["dn_logits"]
            if "dn_pre_boxes" in outputs:
                boxes = torch.cat([outputs["dn_pre_boxes"][None], boxes])
                logits = torch.cat([outputs["dn_pre_logits"][None], logits])
            matches = list(zip(meta["positive"], meta["target"])) * len(boxes)
            losses.update(self.stack_loss(boxes, logits, targets, matches, "_dn",
                                          local=self.local_inputs(outputs, "dn_")))  # fmt: skip
        else:
            zero = outputs["boxes"].sum() * 0
            losses.update({f"{k}_dn": zero for k in list(losses)})
        branch = outputs.get("one_to_many")
        if branch is not None:
            copies = self.one_to_many_copies
            repeated = [{"boxes": t["boxes"].repeat(copies, 1), "labels": t["labels"].repeat(copies)} for t in targets]
            extra = self.forward(branch, repeated)
            losses.update({f"{k}_o2m": v * self.one_to_many_weight for k, v in extra.items() if not k.endswith("_dn")})
        return losses
