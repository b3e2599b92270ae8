"""Import of the official D-FINE checkpoints (Peterande/D-FINE, `dfine_s_coco.pth`, ...): pickled dicts holding
`{"model": state dict}` (the releases: the EMA weights) or a training checkpoint's `{"ema": {"module": ...}, ...}`,
read through the restricted unpickler.

The files hold no config: the shipped config (dfine-n ... dfine-x) whose tensor shapes the file has is used, with
the file's class count and `reg_scale`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from .mapping import Rule, apply_rules, shipped_size, solver_state, unpack_in_proj

SIZES = ("dfine-n", "dfine-s", "dfine-m", "dfine-l", "dfine-x")
RULES: list[Rule] = [  # (DEIMv2's importer shares them)
    (r"^backbone\.(stem|stages)\.(.*)\.bn\.", r"backbone.\1.\2.norm."),
    (r"\.layers\.(\d+)\.conv1\.", r".layers.\1.pointwise."),  # light blocks: 1x1, then depthwise
    (r"\.layers\.(\d+)\.conv2\.", r".layers.\1.depthwise."),
    (r"\.aggregation\.0\.", ".squeeze."),
    (r"\.aggregation\.1\.", ".excite."),
    (r"^encoder\.encoder\.0\.layers\.0\.", "encoder.aifi."),
    (r"^encoder\.downsample_convs\.(\d+)\.0\.cv1\.", r"encoder.downsample_convs.\1.pointwise."),
    (r"^encoder\.downsample_convs\.(\d+)\.0\.cv2\.", r"encoder.downsample_convs.\1.depthwise."),
    (r"_blocks\.(\d+)\.cv1\.", r"_blocks.\1.split."),
    (r"_blocks\.(\d+)\.cv2\.", r"_blocks.\1.branch1."),
    (r"_blocks\.(\d+)\.cv3\.", r"_blocks.\1.branch2."),
    (r"_blocks\.(\d+)\.cv4\.", r"_blocks.\1.merge."),
    (r"\.branch([12])\.0\.conv([12])\.", r".branch\1.0.cv\2."),
    (r"\.branch([12])\.0\.bottlenecks\.(\d+)\.conv1\.", r".branch\1.0.blocks.\2.conv3x3."),
    (r"\.branch([12])\.0\.bottlenecks\.(\d+)\.conv2\.", r".branch\1.0.blocks.\2.conv1x1."),
    (r"^decoder\.decoder\.(layers|lqe_layers)\.", r"decoder.\1."),
    (r"^decoder\.enc_output\.proj\.", "decoder.enc_output.0."),
    (r"^decoder\.enc_output\.norm\.", "decoder.enc_output.1."),
]
# What the official model stores that ours computes or keeps in its config.
_DROPPED = re.compile(r"^decoder\.(anchors|valid_mask)$|\.num_points_scale$|^decoder\.(decoder\.)?(reg_scale|up)$")


def official_state(checkpoint: Any) -> dict[str, torch.Tensor] | None:
    """The state dict of an official D-FINE checkpoint (its EMA when it has one), else None."""
    state = solver_state(checkpoint)
    if state is not None and "decoder.decoder.up" in state and "decoder.decoder.layers.0.linear1.weight" in state:
        return state
    return None


def convert(checkpoint: dict[str, Any], path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """-> (our model config with names, our state dict)."""
    official = official_state(checkpoint)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in official.items():
        if not _DROPPED.search(key):
            state.update(unpack_in_proj(apply_rules(key, RULES), tensor))
    nc = state["decoder.dec_score_head.0.weight"].shape[0]
    state["decoder.denoising_class_embed.weight"] = state["decoder.denoising_class_embed.weight"][:nc]  # padding row
    settings = {name: float(official[f"decoder.decoder.{name}"].reshape(-1)[0]) for name in ("reg_scale", "up")}
    return shipped_size("D-FINE", SIZES, state, path, settings)
