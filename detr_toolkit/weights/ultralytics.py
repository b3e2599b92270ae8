"""Import RT-DETR checkpoints written by ultralytics (`RTDETR(...).save()`, `rtdetr-l.pt`, training runs).

Such a file pickles the whole `RTDETRDetectionModel`. It is read through the restricted unpickler
(nothing of ultralytics is imported), then translated in two steps:
  1. its layer list (`model.yaml`) -> our model config (backbone stages, encoder, decoder sizes);
  2. its state dict, keyed by layer index (`model.7.m.0.conv1.conv.weight`) -> our module names
     (`backbone.stages.2.blocks.2.layers.0.pointwise.conv.weight`).
Checkpoints saved after `fuse()` (conv and batch norm folded) are unfolded into equivalent weights.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import torch

from ..config import class_names
from ..errors import CheckpointError
from ..nn.decoders.anchors import generate_anchors, level_shapes
from .mapping import apply_rules, unpack_in_proj
from .safe_pickle import ForeignObject, module_tree_state

# The head of every ultralytics RT-DETR yaml (3 feature levels): AIFI, top-down FPN, bottom-up PAN, decoder.
HEAD_LAYOUT = [
    "Conv", "AIFI", "Conv", "nn.Upsample", "Conv", "Concat", "RepC3", "Conv",
    "nn.Upsample", "Conv", "Concat", "RepC3", "Conv", "Concat", "RepC3", "Conv", "Concat", "RepC3",
    "RTDETRDecoder",
]  # fmt: skip
HEAD_STRIDES = [8, 16, 32]  # of the three maps the head reads (HGNetv2's last three stages)
# ultralytics' RTDETRDetectionLoss: its loss gains, VarifocalLoss and HungarianMatcher settings.
LOSS = {
    "class_loss": "varifocal", "class_weight": 1.0, "bbox_weight": 5.0, "giou_weight": 2.0, "alpha": 0.25,
    "gamma": 1.5, "matcher": {"class_weight": 2.0, "bbox_weight": 5.0, "giou_weight": 2.0, "alpha": 0.25, "gamma": 2.0},
}  # fmt: skip
HGBLOCK_DEFAULTS = [3, False, False]  # kernel, light, shortcut after (mid, out)
# RTDETRDecoder's positional arguments in ultralytics, with their defaults, under our names.
DECODER_ARGS = {
    "nc": None, "hidden_dim": 256, "num_queries": 300, "num_points": 4, "num_heads": 8, "num_layers": 6,
    "ffn_dim": 1024, "dropout": 0.0,
}  # fmt: skip


def _module_tree(checkpoint: dict) -> Any:
    """The checkpoint's model: its EMA when it has one (ultralytics saves both during training)."""
    ema = checkpoint.get("ema")
    return ema if isinstance(ema, ForeignObject) else checkpoint.get("model")


def is_ultralytics_checkpoint(checkpoint: Any) -> bool:
    """True for the dict ultralytics saves: {'model' or 'ema': <ultralytics module tree>, ...}."""
    if not isinstance(checkpoint, dict):
        return False
    model = _module_tree(checkpoint)
    return isinstance(model, ForeignObject) and model.foreign_name.startswith("ultralytics.")


def convert(checkpoint: dict, path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """ultralytics checkpoint -> (our model config with class names, our state dict in float32)."""
    model = _module_tree(checkpoint)
    if not model.foreign_name.endswith("RTDETRDetectionModel"):
        kind = model.foreign_name.rsplit(".", 1)[-1]
        raise CheckpointError(f"{path}: holds an ultralytics {kind}, not an RT-DETR model")
    spec = getattr(model, "yaml", None)
    if not isinstance(spec, dict) or "backbone" not in spec or "head" not in spec:
        raise CheckpointError(f"{path}: the ultralytics model carries no layer list (yaml)")
    state = {k: v.float() for k, v in module_tree_state(model).items() if isinstance(v, torch.Tensor)}
    norm_eps = _batch_norm_eps(model)
    config, layers = _translate_layers(spec, norm_eps, path)
    config["names"] = class_names(getattr(model, "names", None), config["nc"], str(path))
    state = _rename_state(state, layers, norm_eps)
    decoder_node = model._modules["model"]._modules[str(len(spec["backbone"]) + len(HEAD_LAYOUT) - 1)]
    for name in ("num_denoising", "label_noise_ratio", "box_noise_scale"):  # training settings it carries
        config["decoder"][name] = getattr(decoder_node, name)
    state.update(_eval_anchors(decoder_node, config))
    return config, state


def _eval_anchors(decoder: Any, config: dict) -> dict[str, torch.Tensor]:
    """The decoder's anchors at eval size: those ultralytics cached in the checkpoint (its inference
    reuses them, rounded to fp16 by `save()`), else computed; sets `eval_size` to match."""
    strides = HEAD_STRIDES
    shapes = [tuple(s) for s in getattr(decoder, "shapes", [])]
    anchors = getattr(decoder, "anchors", None)
    size = shapes[-1][0] * strides[-1] if shapes else 0
    if size and shapes == level_shapes(size, strides) and isinstance(anchors, torch.Tensor):
        config["decoder"]["eval_size"] = size
        return {"decoder.anchors": anchors.float(), "decoder.valid_mask": decoder.valid_mask}
    config["decoder"]["eval_size"] = 640
    anchors, valid = generate_anchors(level_shapes(640, strides), config["decoder"]["anchor_size"])
    return {"decoder.anchors": anchors, "decoder.valid_mask": valid}


def _batch_norm_eps(node: Any) -> float:
    """The eps of the first BatchNorm2d in the tree (ultralytics sets 1e-3 on all of them)."""
    stack, seen = [node], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:  # a hostile pickle may hold a cycle
            continue
        seen.add(id(node))
        if getattr(node, "foreign_name", "").endswith("BatchNorm2d"):
            return float(node.eps)
        stack.extend(reversed([m for m in getattr(node, "_modules", {}).values() if m is not None]))
    return 1e-3  # a fully fused tree has no batch norm left; its folded weights do not depend on eps


def _translate_layers(spec: dict, norm_eps: float, path: str | Path) -> tuple[dict, dict[int, tuple[str, str]]]:
    """ultralytics layer list -> (our config, {layer index: (our module prefix, ultralytics layer kind)})."""
    backbone_layers, head_layers = spec["backbone"], spec["head"]
    nc = int(spec["nc"])
    stem, stages, layers_per_block = None, [], None
    layers: dict[int, tuple[str, str]] = {}
    stage_of_layer: dict[int, int] = {}
    for index, (_, repeats, kind, args) in enumerate(backbone_layers):
        if kind == "HGStem":
            stem = [int(args[0]), int(args[1])]
            layers[index] = ("backbone.stem", kind)
        elif kind == "DWConv":
            stages.append({"downsample": True, "blocks": 0})
            layers[index] = (f"backbone.stages.{len(stages) - 1}.downsample", kind)
        elif kind == "HGBlock":
            if not stages:  # the first stage follows the stem directly
                stages.append({"downsample": False, "blocks": 0})
            mid, out, kernel, light, shortcut = [*args, *HGBLOCK_DEFAULTS[len(args) - 2 :]]
            stage = stages[-1]
            if stage["blocks"] and (mid, out, kernel, light) != (
                stage["mid"],
                stage["out"],
                stage["kernel"],
                stage["light"],
            ):
                raise CheckpointError(f"{path}: unsupported HGNet stage layout at layer {index}")
            if bool(shortcut) != (stage["blocks"] > 0):
                raise CheckpointError(f"{path}: unsupported HGBlock shortcut pattern at layer {index}")
            if layers_per_block not in (None, repeats):
                raise CheckpointError(f"{path}: HG blocks of different depths are not supported")
            layers_per_block = repeats
            stage.update(mid=int(mid), out=int(out), kernel=int(kernel), light=bool(light))
            layers[index] = (f"backbone.stages.{len(stages) - 1}.blocks.{stage['blocks']}", kind)
            stage["blocks"] += 1
            stage_of_layer[index] = len(stages) - 1
        else:
            raise CheckpointError(f"{path}: backbone layer {kind} is not supported (only the HGNetv2 of rtdetr-l/x is)")
    if stem is None or not stages:
        raise CheckpointError(f"{path}: no HGNetv2 stem/stages found in the ultralytics layer list")

    kinds = [layer[2] for layer in head_layers]
    if kinds != HEAD_LAYOUT:
        raise CheckpointError(f"{path}: unsupported RT-DETR head layout {kinds} (expected that of rtdetr-l/x)")
    offset = len(backbone_layers)
    # Which backbone layers feed the encoder: the three input projections (coarsest first in the yaml).
    proj_sources = [head_layers[i][0] for i in (0, 4, 9)]
    proj_sources = [offset - 1 if f == -1 else f for f in proj_sources]
    return_stages = [stage_of_layer[f] for f in reversed(proj_sources)]
    hidden_dim = int(head_layers[0][3][0])
    ffn_dim, num_heads = (list(head_layers[1][3]) + [2048, 8])[:2]
    repc3 = head_layers[6]
    roles = {
        0: "encoder.input_proj.2", 1: "encoder.aifi", 2: "encoder.lateral_convs.0", 4: "encoder.input_proj.1",
        6: "encoder.fpn_blocks.0", 7: "encoder.lateral_convs.1", 9: "encoder.input_proj.0",
        11: "encoder.fpn_blocks.1", 12: "encoder.downsample_convs.0", 14: "encoder.pan_blocks.0",
        15: "encoder.downsample_convs.1", 17: "encoder.pan_blocks.1", 18: "decoder",
    }  # fmt: skip
    layers.update({offset + i: (prefix, kinds[i]) for i, prefix in roles.items()})

    decoder = {"type": "rtdetr", **DECODER_ARGS, **dict(zip(DECODER_ARGS, head_layers[18][3]))}
    decoder.pop("nc")
    decoder.update(act="relu", eval_idx=-1, anchor_size=0.05, norm_eps=norm_eps)
    config = {
        "nc": nc,
        "imgsz": 640,
        "backbone": {
            "type": "hgnetv2",
            "stem": stem,
            "layers_per_block": int(layers_per_block),
            "stages": stages,
            "return_stages": return_stages,
            "norm_eps": norm_eps,
        },
        "encoder": {
            "type": "hybrid",
            "hidden_dim": hidden_dim,
            "ffn_dim": int(ffn_dim),
            "num_heads": int(num_heads),
            "csp_blocks": int(repc3[1]),
            "expansion": float(repc3[3][1]) if len(repc3[3]) > 1 else 1.0,
            "act": "silu",
            "attn_act": "gelu",
            "norm_eps": norm_eps,
        },
        "decoder": decoder,
        "loss": copy.deepcopy(LOSS),
    }
    return config, layers


# Renames inside one ultralytics layer, by layer kind; applied in order to ".<rest of key>".
_BN = (r"\.bn\.", ".norm.")
_RENAMES: dict[str, list[tuple[str, str]]] = {
    "HGStem": [_BN],
    "DWConv": [_BN],
    "Conv": [_BN],
    "HGBlock": [
        (r"^\.m\.(\d+)\.conv1\.", r".layers.\1.pointwise."),  # LightConv
        (r"^\.m\.(\d+)\.conv2\.", r".layers.\1.depthwise."),
        (r"^\.m\.(\d+)\.", r".layers.\1."),  # plain Conv
        (r"^\.sc\.", ".squeeze."),
        (r"^\.ec\.", ".excite."),
        _BN,
    ],
    "RepC3": [
        (r"^\.m\.(\d+)\.conv1\.", r".blocks.\1.conv3x3."),
        (r"^\.m\.(\d+)\.conv2\.", r".blocks.\1.conv1x1."),
        _BN,
    ],
    "AIFI": [(r"^\.ma\.", ".self_attn."), (r"^\.fc1\.", ".linear1."), (r"^\.fc2\.", ".linear2.")],
    "RTDETRDecoder": [
        (r"^\.input_proj\.(\d+)\.0\.", r".input_proj.\1.conv."),
        (r"^\.input_proj\.(\d+)\.1\.", r".input_proj.\1.norm."),
        (r"^\.decoder\.layers\.", ".layers."),
    ],
}


def _rename_state(
    state: dict[str, torch.Tensor], layers: dict[int, tuple[str, str]], norm_eps: float
) -> dict[str, torch.Tensor]:
    """`model.<index>.<rest>` -> `<our prefix>.<renamed rest>`; packed q/k/v projections are split."""
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in _unfold_fused(state, norm_eps).items():
        index, _, rest = key.removeprefix("model.").partition(".")
        if not index.isdigit() or int(index) not in layers:
            raise CheckpointError(f"unexpected ultralytics weight {key!r}")
        prefix, kind = layers[int(index)]
        renamed.update(unpack_in_proj(prefix + apply_rules("." + rest, _RENAMES[kind]), tensor))
    return renamed


def _unfold_fused(state: dict[str, torch.Tensor], norm_eps: float) -> dict[str, torch.Tensor]:
    """Undo ultralytics' `fuse()`, which a saved model may carry.

    A conv with a bias and no batch norm becomes conv + a batch norm computing `+ bias`; a fused RepConv
    (`m.K.conv`, a single 3x3 conv) becomes its 3x3 branch beside a zero 1x1 branch.
    """
    state = dict(state)
    for bias_key in [k for k in state if k.endswith(".conv.bias")]:
        base = bias_key.removesuffix("conv.bias")
        if base + "bn.weight" in state:
            continue
        bias, weight = state.pop(bias_key), state.pop(base + "conv.weight")
        layer = base.split(".m.")[0]
        if re.search(r"\.m\.\d+\.$", base) and f"{layer}.cv1.conv.weight" in state:  # RepConv inside RepC3
            state[base + "conv2.conv.weight"] = torch.zeros_like(weight[:, :, :1, :1])
            _identity_norm(state, base + "conv2.bn.", torch.zeros_like(bias), norm_eps)
            base += "conv1."
        state[base + "conv.weight"] = weight
        _identity_norm(state, base + "bn.", bias, norm_eps)
    return state


def _identity_norm(state: dict[str, torch.Tensor], prefix: str, bias: torch.Tensor, eps: float) -> None:
    """Batch-norm weights that compute `x + bias`: mean 0, variance 1 - eps, scale 1."""
    state[prefix + "weight"] = torch.ones_like(bias)
    state[prefix + "bias"] = bias
    state[prefix + "running_mean"] = torch.zeros_like(bias)
    state[prefix + "running_var"] = torch.full_like(bias, 1 - eps)
    state[prefix + "num_batches_tracked"] = torch.tensor(0)
