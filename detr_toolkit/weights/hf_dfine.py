"""D-FINE from transformers `save_pretrained` folders (see `huggingface`).

The config becomes ours: an HGNetv2 backbone (learnable affine blocks, frozen batch norms), the hybrid encoder
with D-FINE's ELAN fusion and SCDown, and the D-FINE decoder. `reg_scale` and `up` are read from the tensors, which
the model computes with (a converted D-FINE-X's config says 4 where its tensor holds 8). Tensors arrive in the
module names of transformers 5 or in the legacy names its `save_pretrained` writes (`encoder.encoder.0`,
`out_proj`, `fc1`).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .hf_config import family_config, hgnetv2_backbone, rename_tensors, require
from .mapping import Rule, apply_rules

BACKBONE_RULES: list[Rule] = [
    (r"^model\.backbone\.model\.embedder\.", "backbone.stem."),
    (r"^model\.backbone\.model\.encoder\.stages\.", "backbone.stages."),
    (r"\.layers\.(\d+)\.conv1\.", r".layers.\1.pointwise."),  # light blocks: 1x1, then depthwise
    (r"\.layers\.(\d+)\.conv2\.", r".layers.\1.depthwise."),
    (r"\.aggregation\.0\.", ".squeeze."),
    (r"\.aggregation\.1\.", ".excite."),
    (r"\.convolution\.", ".conv."),
    (r"\.normalization\.", ".norm."),
]
SCDOWN_AIFI_RULES: list[Rule] = [  # encoder parts D-FINE and DEIMv2 share
    (r"downsample_convs\.(\d+)\.conv1\.", r"downsample_convs.\1.pointwise."),
    (r"downsample_convs\.(\d+)\.conv2\.", r"downsample_convs.\1.depthwise."),
    (r"^encoder\.aifi\.self_attn_layer_norm\.", "encoder.aifi.norm1."),
    (r"^encoder\.aifi\.final_layer_norm\.", "encoder.aifi.norm2."),
]
ENCODER_RULES: list[Rule] = [
    (r"^model\.encoder_input_proj\.(\d+)\.0\.", r"encoder.input_proj.\1.conv."),
    (r"^model\.encoder_input_proj\.(\d+)\.1\.", r"encoder.input_proj.\1.norm."),
    (r"^model\.encoder\.(encoder|aifi)\.0\.layers\.0\.", "encoder.aifi."),
    (r"^model\.encoder\.", "encoder."),
    (r"\.csp_rep([12])\.conv([12])\.", r".branch\1.0.cv\2."),
    (r"\.csp_rep([12])\.bottlenecks\.(\d+)\.conv1\.", r".branch\1.0.blocks.\2.conv3x3."),
    (r"\.csp_rep([12])\.bottlenecks\.(\d+)\.conv2\.", r".branch\1.0.blocks.\2.conv1x1."),
    (r"_blocks\.(\d+)\.conv1\.", r"_blocks.\1.split."),
    (r"_blocks\.(\d+)\.conv2\.", r"_blocks.\1.branch1.1."),
    (r"_blocks\.(\d+)\.conv3\.", r"_blocks.\1.branch2.1."),
    (r"_blocks\.(\d+)\.conv4\.", r"_blocks.\1.merge."),
    *SCDOWN_AIFI_RULES,
]
DECODER_RULES: list[Rule] = [
    (r"^model\.decoder_input_proj\.(\d+)\.0\.", r"decoder.input_proj.\1.conv."),
    (r"^model\.decoder_input_proj\.(\d+)\.1\.", r"decoder.input_proj.\1.norm."),
    (r"^model\.decoder\.class_embed\.", "decoder.dec_score_head."),
    (r"^model\.decoder\.bbox_embed\.", "decoder.dec_bbox_head."),
    (r"^model\.(decoder\.)?", "decoder."),
    (r"\.self_attn_layer_norm\.", ".norm1."),
    (r"\.final_layer_norm\.", ".norm3."),
    (r"\.encoder_attn\.", ".cross_attn."),
]
SHARED_RULES: list[Rule] = [
    (r"\.self_attn\.o_proj\.", ".self_attn.out_proj."),
    (r"\.(mlp\.layers\.0|fc1)\.", ".linear1."),
    (r"\.(mlp\.layers\.1|fc2)\.", ".linear2."),
]
_PARTS = [
    (r"^model\.backbone\.", BACKBONE_RULES),
    (r"^model\.(encoder_input_proj|encoder)\.", ENCODER_RULES),
    (
        r"^model\.(decoder_input_proj|decoder|enc_output|enc_score_head|enc_bbox_head|denoising_class_embed)\.",
        DECODER_RULES,
    ),
]
# Buffers transformers keeps that our modules compute or hold in the config.
_DROPPED = re.compile(r"(num_batches_tracked|num_points_scale|^model\.decoder\.(reg_scale|up))$")


def rename(key: str) -> str | None:
    """A D-FINE key in either spelling -> ours, None for a buffer we compute, KeyError if unknown."""
    if _DROPPED.search(key):
        return None
    for prefix, rules in _PARTS:
        if re.match(prefix, key):
            return apply_rules(apply_rules(key, rules), SHARED_RULES)
    raise KeyError(key)


def convert_config(hf: dict[str, Any], preprocessor: dict[str, Any] | None) -> dict[str, Any]:
    """A transformers DFineConfig (as JSON) -> our model config."""
    require(hf, "decoder_method", "default")
    require(hf, "layer_scale", 1)
    encoder = {
        "csp_blocks": round(3 * hf.get("depth_mult", 1.0)),  # transformers' rule for the RepConv count
        "lateral_act": None, "block": "elan", "downsample": "scdown",
    }  # fmt: skip
    decoder = {
        "type": "dfine", "eval_idx": hf.get("eval_idx", -1), "reg_max": hf.get("max_num_bins", 32),
        "reg_scale": hf.get("reg_scale", 4.0), "up": hf.get("up", 0.5), "lqe_top_k": hf.get("top_prob_values", 4),
        "lqe_hidden_dim": hf.get("lqe_hidden_dim", 64), "lqe_layers": hf.get("lqe_layers", 2),
    }  # fmt: skip
    config = family_config(hf, preprocessor, hgnetv2_backbone(hf), encoder, decoder)
    config["loss"].update(distribution_loss(hf))
    return config


def distribution_loss(hf: dict[str, Any]) -> dict[str, Any]:
    """D-FINE's terms on edge distributions, and the union matching the official recipe uses for box terms
    (GO-LSD; transformers' D-FINE loss matches each layer on its own)."""
    return {"fgl_weight": hf.get("weight_loss_fgl", 0.15), "ddf_weight": hf.get("weight_loss_ddf", 1.5),
            "union_matching": True}  # fmt: skip


def convert_state(tensors: dict[str, torch.Tensor], where: str, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """transformers' tensors -> our state dict; `reg_scale` and `up` from the tensors into `config`. CheckpointError
    naming `where` for a tensor no rule knows."""
    for name in ("reg_scale", "up"):
        value = tensors.get(f"model.decoder.{name}")
        if value is not None:
            config["decoder"][name] = float(value.reshape(-1)[0])
    return rename_tensors(tensors, rename, where, config["nc"])
