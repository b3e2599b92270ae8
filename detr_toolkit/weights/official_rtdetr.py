"""Import of the official RT-DETR and RT-DETRv2 checkpoints (lyuwenyu/RT-DETR, `rtdetr_r50vd_6x_coco_from_paddle.pth`,
`rtdetrv2_r18vd_120e_coco_rerun_48.1.pth`, ...): pickled dicts `{"model": state dict, "ema": {"module": state
dict, ...}, ...}` read through the restricted unpickler. The EMA weights are taken when present, as the official
tools do.

The files hold no config. The architecture is read from the tensors (block counts and widths, points per level
from RT-DETRv2's `num_points_scale`); a shipped config with the same shapes gives what tensors cannot tell
(rtdetrv2-m predicts from decoder layer 3, the training recipe). RT-DETRv2's "dsp" checkpoints were trained with
discrete sampling, which is named only in their file names.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import torch

from ..config import class_names, load_model_config, packaged_configs
from ..errors import CheckpointError
from .mapping import Rule, apply_rules, solver_state, unpack_in_proj

OFFICIAL_POINTS = 4  # points per level of every released RT-DETR (v1 stores no count; v2 stores num_points_scale)
DISCRETE_MARK = re.compile(r"[-_]dsp[-_.]")  # RT-DETRv2's discrete-sampling files: rtdetrv2_r18vd_dsp_3x_coco.pth
SIGNATURE = {  # the config keys that tensor shapes determine, by section
    "backbone": ("depths", "widths", "block", "stem", "freeze_norm"),
    "encoder": ("hidden_dim", "ffn_dim", "expansion", "csp_blocks"),
    "decoder": ("hidden_dim", "num_layers", "ffn_dim", "num_points", "num_heads"),
}
RULES: list[Rule] = [
    (r"^backbone\.conv1\.conv1_(\d)\.", lambda m: f"backbone.stem.{int(m[1]) - 1}."),
    (r"^backbone\.res_layers\.(\d+)\.blocks\.(\d+)\.", r"backbone.stages.\1.\2."),
    (r"\.branch2a\.", ".convs.0."),
    (r"\.branch2b\.", ".convs.1."),
    (r"\.branch2c\.", ".convs.2."),
    (r"\.short\.conv\.(conv|norm)\.", r".shortcut.proj.\1."),  # after the average pool (strided stages)
    (r"\.short\.(conv|norm)\.", r".shortcut.proj.\1."),
    (r"^encoder\.input_proj\.(\d+)\.(0|conv)\.", r"encoder.input_proj.\1.conv."),
    (r"^encoder\.input_proj\.(\d+)\.(1|norm)\.", r"encoder.input_proj.\1.norm."),
    (r"^encoder\.encoder\.0\.layers\.0\.", "encoder.aifi."),
    (r"_blocks\.(\d+)\.conv([123])\.", r"_blocks.\1.cv\2."),
    (r"\.bottlenecks\.(\d+)\.conv1\.", r".blocks.\1.conv3x3."),
    (r"\.bottlenecks\.(\d+)\.conv2\.", r".blocks.\1.conv1x1."),
    (r"^decoder\.decoder\.layers\.", "decoder.layers."),
    (r"^decoder\.enc_output\.(0|proj)\.", "decoder.enc_output.0."),
    (r"^decoder\.enc_output\.(1|norm)\.", "decoder.enc_output.1."),
]
_OURS = re.compile(
    r"^(backbone\.(stem|stages)|encoder\.(input_proj|aifi|lateral_convs|fpn_blocks|downsample_convs|pan_blocks)|"
    r"decoder\.(input_proj|layers|denoising_class_embed|query_pos_head|enc_output|enc_score_head|enc_bbox_head|"
    r"dec_score_head|dec_bbox_head))\."
)
# Buffers the official code keeps that our modules compute: anchors for eval_size, v2's per-point offset scales.
_DROPPED = re.compile(r"^decoder\.(anchors|valid_mask)$|\.num_points_scale$")


def official_state(checkpoint: Any) -> dict[str, torch.Tensor] | None:
    """The state dict of an official RT-DETR / RT-DETRv2 checkpoint (its EMA when it has one), else None."""
    state = solver_state(checkpoint)
    if (
        state is not None
        and "backbone.conv1.conv1_1.conv.weight" in state
        and any(isinstance(k, str) and k.startswith("decoder.dec_score_head.") for k in state)
    ):
        return state
    return None


def _count(state: dict, pattern: str) -> int:
    """How many distinct indices the (\\d+) group of `pattern` takes among the keys."""
    return len({m[1] for k in state if (m := re.match(pattern, k))})


def _points_per_level(scale: torch.Tensor) -> list[int]:
    """RT-DETRv2's num_points_scale holds 1/n for each of a level's n points, level after level -> [n, ...]."""
    counts, index = (1 / scale.double()).round().long().tolist(), 0
    points = []
    while index < len(counts):
        if counts[index] < 1:
            raise ValueError(f"num_points_scale holds {scale[index].item()}, not 1/n for n points")
        points.append(counts[index])
        index += counts[index]
    return points


def _infer(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The architecture settings the tensors determine (see SIGNATURE), and nc."""
    stages = _count(state, r"backbone\.res_layers\.(\d+)\.")
    depths = [_count(state, rf"backbone\.res_layers\.{s}\.blocks\.(\d+)\.") for s in range(stages)]
    bottleneck = "backbone.res_layers.0.blocks.0.branch2c.conv.weight" in state
    last = "branch2c" if bottleneck else "branch2b"
    widths = [state[f"backbone.res_layers.{s}.blocks.0.{last}.conv.weight"].shape[0] for s in range(stages)]
    levels = _count(state, r"encoder\.input_proj\.(\d+)\.")
    hidden = state["encoder.lateral_convs.0.conv.weight"].shape[0]
    scale = state.get("decoder.decoder.layers.0.cross_attn.num_points_scale")
    points = _points_per_level(scale) if scale is not None else [OFFICIAL_POINTS] * levels
    d_model = state["decoder.input_proj.0.conv.weight"].shape[0]
    heads = state["decoder.decoder.layers.0.cross_attn.attention_weights.weight"].shape[0] // sum(points)
    return {
        "nc": state["decoder.dec_score_head.0.weight"].shape[0],
        "backbone": {
            "depths": depths, "widths": widths, "block": "bottleneck" if bottleneck else "basic",
            "stem": state["backbone.conv1.conv1_3.conv.weight"].shape[0],
            "freeze_norm": not any(k.startswith("backbone.") and k.endswith("num_batches_tracked") for k in state),
            "return_stages": list(range(stages - levels, stages)),
        },
        "encoder": {
            "hidden_dim": hidden, "ffn_dim": state["encoder.encoder.0.layers.0.linear1.weight"].shape[0],
            "expansion": state["encoder.fpn_blocks.0.conv1.conv.weight"].shape[0] / hidden,
            "csp_blocks": _count(state, r"encoder\.fpn_blocks\.0\.bottlenecks\.(\d+)\."), "num_heads": heads,
        },
        "decoder": {
            "hidden_dim": d_model, "num_layers": _count(state, r"decoder\.dec_score_head\.(\d+)\."),
            "ffn_dim": state["decoder.decoder.layers.0.linear1.weight"].shape[0],
            "num_points": points if scale is not None else OFFICIAL_POINTS, "num_heads": heads,
        },
    }  # fmt: skip


def _signature(config: dict[str, Any]) -> dict[str, Any]:
    points = config["decoder"].get("num_points")
    signature = {(part, key): config[part].get(key) for part, keys in SIGNATURE.items() for key in keys}
    signature["decoder", "num_points"] = points if isinstance(points, list) else [points] * 3
    return signature


def _shipped_match(inferred: dict[str, Any], v2: bool) -> dict[str, Any] | None:
    """The shipped config whose shapes these are, if any: of the checkpoint's version first (RT-DETR v1's
    r50vd_m has no config of its own and is RT-DETRv2-M's shape, eval_idx included)."""
    patterns = ["rtdetrv2-*.yaml", "rtdetr-r*.yaml"]
    for pattern in patterns if v2 else patterns[::-1]:
        for path in sorted(packaged_configs().glob(pattern)):
            config = load_model_config(path)
            if _signature(config) == _signature(inferred):
                return config
    return None


def convert(checkpoint: dict[str, Any], path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """-> (our model config with names, our state dict)."""
    state = official_state(checkpoint)
    v2 = any(k.endswith("num_points_scale") for k in state)
    inferred = _infer(state)
    match = _shipped_match(inferred, v2)
    config = copy.deepcopy(match or load_model_config("rtdetrv2-l" if v2 else "rtdetr-r50"))
    for part in ("backbone", "encoder", "decoder"):
        config[part].update(inferred[part])
    if match is None:  # a custom size: the recipe's frozen stem goes with frozen norms, as in the official configs
        config["backbone"]["frozen_parts"] = 1 if inferred["backbone"]["freeze_norm"] else 0
    if inferred["nc"] != config["nc"]:  # fine-tuned to other classes, which the file does not name
        config["nc"], config["names"] = inferred["nc"], class_names(None, inferred["nc"], str(path))
    if v2 and DISCRETE_MARK.search(Path(path).name):
        config["decoder"]["sampling"] = "discrete"
    ours: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if _DROPPED.search(key):
            continue
        new = apply_rules(key, RULES)
        if not _OURS.match(new):
            raise CheckpointError(f"{path}: unexpected tensor {key!r} in an official RT-DETR checkpoint")
        ours.update(unpack_in_proj(new, tensor))
    embed = ours["decoder.denoising_class_embed.weight"]  # the official one ends with a padding-class row
    ours["decoder.denoising_class_embed.weight"] = embed[: inferred["nc"]]
    return config, ours
