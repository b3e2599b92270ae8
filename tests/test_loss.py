"""The training loss against ultralytics' RTDETRDetectionLoss on identical predictions and targets."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TINY_DFINE_CONFIG, TINY_VIT_CONFIG

from detr_toolkit.config import load_model_config
from detr_toolkit.loss import DetectionCriterion, HungarianMatcher, build_criterion
from detr_toolkit.nn.decoders.denoising import denoising_queries

LAYERS, BATCH, QUERIES, CLASSES = 6, 3, 40, 5


def random_boxes(*shape: int) -> torch.Tensor:
    """cxcywh boxes inside the unit square."""
    wh = torch.rand(*shape, 2) * 0.4 + 0.05
    cxcy = wh / 2 + torch.rand(*shape, 2) * (1 - wh)
    return torch.cat([cxcy, wh], -1)


def make_case(counts: list[int], seed: int = 0):
    torch.manual_seed(seed)
    targets = [{"boxes": random_boxes(n), "labels": torch.randint(0, CLASSES, (n,))} for n in counts]
    dn = denoising_queries(targets, torch.randn(CLASSES, 8), QUERIES, num_denoising=12)
    dn_slots = dn.queries.shape[1] if dn else 0
    outputs = {
        "boxes": random_boxes(LAYERS, BATCH, QUERIES),
        "logits": torch.randn(LAYERS, BATCH, QUERIES, CLASSES) * 2,
        "enc_boxes": random_boxes(BATCH, QUERIES),
        "enc_logits": torch.randn(BATCH, QUERIES, CLASSES) * 2,
    }
    if dn:
        outputs.update(dn_boxes=random_boxes(LAYERS, BATCH, dn_slots),
                       dn_logits=torch.randn(LAYERS, BATCH, dn_slots, CLASSES),
                       dn_meta={"positive": dn.positive, "target": dn.target})  # fmt: skip
    return outputs, targets, dn


def ultralytics_losses(outputs, targets, dn):
    from ultralytics.models.utils.loss import RTDETRDetectionLoss

    counts = [len(t["labels"]) for t in targets]
    batch = {
        "cls": torch.cat([t["labels"] for t in targets]),
        "bboxes": torch.cat([t["boxes"] for t in targets]),
        "gt_groups": counts,
        "batch_idx": torch.cat([torch.full((n,), i) for i, n in enumerate(counts)]),
    }
    boxes = torch.cat([outputs["enc_boxes"][None], outputs["boxes"]])
    logits = torch.cat([outputs["enc_logits"][None], outputs["logits"]])
    meta = None
    if dn is not None:
        offsets = torch.tensor([0, *counts[:-1]]).cumsum(0)
        groups = 12 // min(max(counts), 12)  # num_denoising // most objects in an image
        first = [t[: len(t) // groups] + o for t, o in zip(dn.target, offsets)]
        meta = {"dn_pos_idx": dn.positive, "dn_num_group": groups, "dn_gt_idx": first}
    criterion = RTDETRDetectionLoss(nc=CLASSES, use_vfl=True)
    return criterion((boxes, logits), batch, outputs.get("dn_boxes"), outputs.get("dn_logits"), meta)


@pytest.mark.parametrize("counts", [[3, 0, 5], [1, 2, 2], [0, 0, 0], [20, 1, 3]])
def test_losses_equal_ultralytics(counts):
    """Every term (main, auxiliary, denoising) agrees to 1e-5 relative, with and without objects."""
    outputs, targets, dn = make_case(counts)
    ours = build_criterion(load_model_config("rtdetr-l")["loss"], CLASSES)(outputs, targets)  # the shipped config's
    theirs = ultralytics_losses(outputs, targets, dn)
    assert set(ours) == set(theirs)
    for key in theirs:
        assert torch.allclose(ours[key].float(), theirs[key].float(), rtol=1e-5, atol=1e-6), key
    assert ours["loss_class"] > 0


def test_matcher_guards_non_finite_costs():
    boxes = random_boxes(1, 10)
    logits = torch.randn(1, 10, CLASSES)
    logits[0, 3] = float("nan")
    targets = [{"boxes": random_boxes(4), "labels": torch.tensor([0, 1, 2, 3])}]
    queries, objects = HungarianMatcher()(boxes, logits, targets)[0]
    assert len(queries) == 4 and sorted(objects.tolist()) == [0, 1, 2, 3]


def test_denoising_queries_layout():
    targets = [{"boxes": random_boxes(n), "labels": torch.zeros(n, dtype=torch.int64)} for n in (2, 4)]
    dn = denoising_queries(targets, torch.randn(3, 8), num_queries=10, num_denoising=20)
    groups = 20 // 4
    assert dn.queries.shape == (2, groups * 8, 8) and dn.attn_mask.shape == (groups * 8 + 10,) * 2
    assert dn.positive[0].tolist()[:2] == [0, 1] and dn.positive[0].tolist()[2:4] == [8, 9]
    assert dn.target[1].tolist() == [0, 1, 2, 3] * groups
    mask = dn.attn_mask
    assert mask[40:, :40].all() and not mask[:40, 40:].any()  # ordinary queries never see the noised answers
    assert not mask[:8, :8].any() and mask[:8, 8:40].all()  # a group sees only itself
    assert denoising_queries([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}], torch.randn(3, 8), 10) is None


def test_group_detr_training_step_reaches_every_parameter():
    """LW-DETR / RF-DETR training: G query groups, each matched to every object; one step trains all weights."""
    from detr_toolkit.nn import build_model

    torch.manual_seed(0)
    model = build_model(copy.deepcopy(TINY_VIT_CONFIG)).train()
    with torch.no_grad():  # zero-initialised box heads would block gradients to the layers before them
        for param in model.parameters():
            if not param.abs().sum():
                param.normal_(0, 0.01)
    targets = [{"boxes": random_boxes(n), "labels": torch.randint(0, 4, (n,))} for n in (2, 4)]
    outputs = model(torch.rand(2, 3, 64, 64), targets)
    assert outputs["boxes"].shape == (2, 2, 30, 4) and outputs["groups"] == 3
    criterion = DetectionCriterion(4)
    matches = criterion.match(outputs["boxes"][-1], outputs["logits"][-1], targets, groups=3)
    for (queries, objects), target in zip(matches, targets):
        assert sorted(objects.tolist()) == sorted(list(range(len(target["labels"]))) * 3)
        assert sorted((queries // 10).tolist()) == sorted([0, 1, 2] * len(target["labels"]))  # once per group
    sum(criterion(outputs, targets).values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == [], missing
    model.eval()
    assert model(torch.rand(1, 3, 64, 64))["boxes"].shape == (1, 10, 4)  # inference: the first group only


@pytest.mark.parametrize("counts", [[3, 0], [2, 5], [0, 0]])
def test_group_losses_equal_transformers_lw_detr(counts):
    """IoU-aware BCE + L1 + GIoU with query groups equals transformers' LwDetrForObjectDetectionLoss (total and
    last-layer terms) on identical predictions."""
    from transformers import LwDetrConfig
    from transformers.loss.loss_lw_detr import LwDetrForObjectDetectionLoss

    layers, groups, queries = 3, 3, 10
    torch.manual_seed(sum(counts))
    targets = [{"boxes": random_boxes(n), "labels": torch.randint(0, CLASSES, (n,))} for n in counts]
    boxes, logits = random_boxes(layers, 2, groups * queries), torch.randn(layers, 2, groups * queries, CLASSES) * 2
    enc_boxes, enc_logits = random_boxes(2, groups * queries), torch.randn(2, groups * queries, CLASSES) * 2
    outputs = {"boxes": boxes, "logits": logits, "enc_boxes": enc_boxes, "enc_logits": enc_logits, "groups": groups}
    ours = build_criterion(load_model_config("rfdetr-base")["loss"], CLASSES)(outputs, targets)
    config = LwDetrConfig(num_labels=CLASSES, group_detr=groups, decoder_layers=layers, num_queries=queries)
    labels = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
    total, terms, _ = LwDetrForObjectDetectionLoss(
        logits[-1], labels, "cpu", boxes[-1], config, logits, boxes, enc_logits, enc_boxes
    )
    assert torch.allclose(sum(v for k, v in ours.items() if not k.endswith("_dn")), total, rtol=1e-5)
    assert torch.allclose(ours["loss_class"], terms["loss_ce"], rtol=1e-5)
    assert torch.allclose(ours["loss_bbox"], terms["loss_bbox"] * 5, rtol=1e-5, atol=1e-7)
    assert torch.allclose(ours["loss_giou"], terms["loss_giou"] * 2, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"class_loss": "dice"}, r"loss: class_loss='dice': use one of"),
        ({"giou_wieght": 2.0}, r"loss: unknown key\(s\) \['giou_wieght'\]"),
        ({"matcher": {"cost_class": 2.0}}, r"loss.matcher: unknown key\(s\) \['cost_class'\]"),
    ],
)
def test_a_loss_section_is_checked_by_name(section, message):
    from detr_toolkit.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        build_criterion(section, CLASSES)


@pytest.mark.parametrize("counts", [[3, 0, 5], [1, 2, 2], [4, 4, 1]])
def test_losses_equal_transformers_rt_detr(counts):
    """The loss a transformers RT-DETR folder converts to (the official recipe's: VFL alpha 0.75, gamma 2) equals
    transformers' RTDetrForObjectDetectionLoss on identical predictions and denoising groups: total and
    last-layer terms. The shipped official configs train with the same loss."""
    from transformers import RTDetrConfig
    from transformers.loss.loss_rt_detr import RTDetrForObjectDetectionLoss

    from detr_toolkit.weights import hf_rtdetr

    outputs, targets, dn = make_case(counts)
    groups = 12 // max(counts)
    assert all(torch.equal(t, torch.arange(len(t) // groups).repeat(groups)) for t in dn.target)
    config = RTDetrConfig(num_labels=CLASSES, decoder_layers=LAYERS, num_queries=QUERIES)
    section = hf_rtdetr.convert_config(config.to_dict(), None)["loss"]
    assert section == load_model_config("rtdetr-r50")["loss"]
    ours = build_criterion(section, CLASSES)(outputs, targets)
    split = outputs["dn_boxes"].shape[2]
    boxes = torch.cat([outputs["dn_boxes"], outputs["boxes"]], 2).transpose(0, 1)  # (B, L, D + Q, 4)
    logits = torch.cat([outputs["dn_logits"], outputs["logits"]], 2).transpose(0, 1)
    meta = {"dn_positive_idx": dn.positive, "dn_num_group": groups, "dn_num_split": [split, QUERIES]}
    labels = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
    total, terms, _ = RTDetrForObjectDetectionLoss(
        logits[:, -1], labels, "cpu", boxes[:, -1], config, logits, boxes, outputs["enc_logits"],
        outputs["enc_boxes"], meta,
    )  # fmt: skip
    assert torch.allclose(sum(ours.values()), total, rtol=1e-5)
    for mine, theirs in (("loss_class", "loss_vfl"), ("loss_bbox", "loss_bbox"), ("loss_giou", "loss_giou")):
        assert torch.allclose(ours[mine], terms[theirs], rtol=1e-5), mine


def distribution_case(counts: list[int], reg_max: int = 8, seed: int = 0):
    """Decoder outputs of a D-FINE-style model (per-layer boxes, logits and edge-distribution logits, layer 0's
    initial boxes, the references) with denoising groups, and the targets."""
    from detr_toolkit.nn.decoders.distribution import weighting_function

    outputs, targets, dn = make_case(counts, seed)
    dn_slots = outputs["dn_boxes"].shape[2]
    for prefix, queries in (("", QUERIES), ("dn_", dn_slots)):
        outputs[f"{prefix}corners"] = torch.randn(LAYERS, BATCH, queries, 4 * (reg_max + 1)) * 3
        outputs[f"{prefix}references"] = random_boxes(BATCH, queries)
        outputs[f"{prefix}pre_boxes"] = random_boxes(BATCH, queries)
        outputs[f"{prefix}pre_logits"] = torch.randn(BATCH, queries, CLASSES) * 2
    outputs.update(bin_values=weighting_function(reg_max, 0.5, 4.0), reg_scale=4.0)
    return outputs, targets, dn


def transformers_distribution_losses(criterion, outputs, targets, dn, groups):
    """transformers' D-FINE-family criterion on the official criterion's sets: the last layer (FGL), layers
    0..L-2 (FGL + DDF from the last layer), layer 0's initial boxes, the proposals, and the denoising layers and
    initial boxes. (Its own `DFineForObjectDetectionLoss` wrapper pairs the sets differently; see the note in
    loss/criterion.py.)"""

    def layer_set(prefix, i):
        return {"logits": outputs[f"{prefix}logits"][i], "pred_boxes": outputs[f"{prefix}boxes"][i],
                "pred_corners": outputs[f"{prefix}corners"][i], "ref_points": outputs[f"{prefix}references"],
                "teacher_corners": outputs[f"{prefix}corners"][-1],
                "teacher_logits": outputs[f"{prefix}logits"][-1]}  # fmt: skip

    def plain_set(logits, boxes):
        return {"logits": logits, "pred_boxes": boxes}

    main = layer_set("", -1)
    main["auxiliary_outputs"] = [layer_set("", i) for i in range(LAYERS - 1)] + [
        plain_set(outputs["pre_logits"], outputs["pre_boxes"]),
        plain_set(outputs["enc_logits"], outputs["enc_boxes"]),
    ]
    main["dn_auxiliary_outputs"] = [layer_set("dn_", i) for i in range(LAYERS)] + [
        plain_set(outputs["dn_pre_logits"], outputs["dn_pre_boxes"])
    ]
    main["denoising_meta_values"] = {"dn_positive_idx": dn.positive, "dn_num_group": groups}
    labels = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
    return criterion(main, labels)


@pytest.mark.parametrize("counts", [[3, 0, 5], [1, 2, 2], [4, 4, 1]])
@pytest.mark.parametrize("family", ["d_fine", "deimv2", "d_fine_union"])
def test_distribution_losses_equal_transformers(family, counts):
    """D-FINE's criterion (varifocal, L1, GIoU, FGL, DDF) and DEIM's (MAL with dense one-to-one = union
    matching for the box terms) equal transformers' DFineLoss / Deimv2Loss on identical predictions: the total
    and the last layer's terms. `d_fine_union` is the official D-FINE recipe (GO-LSD union matching, as the
    shipped configs train), computed by transformers' union code with D-FINE's class loss."""
    from transformers import Deimv2Config, DFineConfig
    from transformers.loss.loss_d_fine import DFineLoss
    from transformers.loss.loss_deimv2 import Deimv2Loss

    from detr_toolkit.weights import hf_deimv2, hf_dfine

    reg_max = 8
    outputs, targets, dn = distribution_case(counts, reg_max)
    groups = 12 // max(counts)
    settings = {"num_labels": CLASSES, "decoder_layers": LAYERS, "num_queries": QUERIES, "max_num_bins": reg_max}
    if family == "d_fine":
        hf = DFineConfig(**settings)
        theirs_criterion = DFineLoss(hf)
        section = {**hf_dfine.convert_config(hf.to_dict(), None)["loss"], "union_matching": False}
    else:
        hf = Deimv2Config(**settings)
        theirs_criterion = Deimv2Loss(hf)
        section = dict(load_model_config("dfine-s")["loss"])
        if family == "deimv2":
            section = hf_deimv2.convert_config(hf.to_dict(), None)["loss"]
        else:
            theirs_criterion.losses = ["vfl", "boxes", "local"]
            theirs_criterion.weight_dict["loss_vfl"] = hf.weight_loss_vfl
    theirs = transformers_distribution_losses(theirs_criterion, outputs, targets, dn, groups)
    ours = build_criterion(section, CLASSES)(outputs, targets)
    assert torch.allclose(sum(ours.values()), sum(theirs.values()), rtol=1e-5)
    class_key = "loss_mal" if family == "deimv2" else "loss_vfl"
    for mine, key in (("loss_class", class_key), ("loss_bbox", "loss_bbox"), ("loss_giou", "loss_giou"),
                      ("loss_fgl", "loss_fgl")):  # fmt: skip
        assert torch.allclose(ours[mine], theirs[key], rtol=1e-5), mine
    ddf = sum(v for k, v in theirs.items() if k.startswith("loss_ddf_aux_") and "_dn_" not in k)
    assert torch.allclose(ours["loss_ddf_aux"], ddf, rtol=1e-5)
    assert ours["loss_ddf_aux"] > 0 and ours["loss_fgl"] > 0


def test_dfine_training_step_reaches_every_parameter(tmp_path):
    """A D-FINE model (shipped dfine-n.yaml, narrowed) trains with its shipped criterion: every set of its
    outputs (layers, layer 0's initial boxes, proposals, denoising) is supervised, every weight gets a gradient,
    and the distribution terms are there."""
    import yaml

    from detr_toolkit.nn import build_model

    tiny = copy.deepcopy(TINY_DFINE_CONFIG)
    (tmp_path / "tiny-dfine.yaml").write_text(yaml.safe_dump(tiny))
    config = load_model_config(tmp_path / "tiny-dfine.yaml")
    torch.manual_seed(0)
    model = build_model(config).train()
    with torch.no_grad():  # zero-initialised heads would block gradients to the layers before them
        for param in model.parameters():
            if not param.abs().sum():
                param.normal_(0, 0.01)
    targets = [{"boxes": random_boxes(n), "labels": torch.randint(0, 4, (n,))} for n in (2, 4)]
    outputs = model(torch.rand(2, 3, 64, 64), targets)
    assert outputs["corners"].shape == (3, 2, 20, 4 * 17) and outputs["pre_boxes"].shape == (2, 20, 4)
    losses = build_criterion(config["loss"], 4)(outputs, targets)
    assert {"loss_fgl", "loss_fgl_aux", "loss_ddf_aux", "loss_fgl_dn", "loss_ddf_aux_dn"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    # (a learnable affine's bias right before a batch norm in training mode gets an exact zero: the norm
    # removes a constant shift, so only "in the graph" is asked of each weight)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == [], missing
    silent = [n for n, p in model.decoder.named_parameters() if not p.grad.abs().sum()]
    assert silent == [], silent
