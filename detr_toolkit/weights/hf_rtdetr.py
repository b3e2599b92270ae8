"""RT-DETR (ResNet-vd) and RT-DETRv2 from transformers `save_pretrained` folders (see `huggingface`).

The config becomes ours: a `resnet_vd` backbone, the hybrid encoder, the RT-DETR decoder (with RT-DETRv2's
sampling options), and the loss transformers (and the official recipe) trains with. Settings of transformers'
classes that our modules do not express are refused by name rather than approximated.

Tensors arrive in two spellings: the module names of transformers 5 (`encoder.aifi.0`, `self_attn.o_proj`,
`mlp.fc1`) and the legacy names its `save_pretrained` writes and the hub holds (`encoder.encoder.0`,
`self_attn.out_proj`, `fc1`; older files also repeat the heads at the top level).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ..errors import CheckpointError
from .hf_config import block_count, family_config, rename_tensors, require
from .mapping import Rule, apply_rules

# transformers' RTDetrResNetConfig defaults (R50-vd); hub configs store little more than the output stages.
RESNET_DEFAULTS = {"embedding_size": 64, "hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3],
                   "layer_type": "bottleneck", "hidden_act": "relu", "out_indices": [2, 3, 4]}  # fmt: skip
SAMPLING = {"default": "bilinear", "discrete": "discrete"}  # decoder_method -> our `sampling`

_RULES: list[tuple[str, list[Rule]]] = [  # (prefix a key must match, rules bringing it to our names)
    (r"^model\.backbone\.model\.", [
        (r"^model\.backbone\.model\.embedder\.embedder\.(\d)\.convolution\.", r"backbone.stem.\1.conv."),
        (r"^model\.backbone\.model\.embedder\.embedder\.(\d)\.normalization\.", r"backbone.stem.\1.norm."),
        (r"^model\.backbone\.model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.", r"backbone.stages.\1.\2."),
        (r"\.layer\.(\d)\.convolution\.", r".convs.\1.conv."),
        (r"\.layer\.(\d)\.normalization\.", r".convs.\1.norm."),
        (r"\.shortcut\.(1\.)?convolution\.", ".shortcut.proj.conv."),
        (r"\.shortcut\.(1\.)?normalization\.", ".shortcut.proj.norm."),
    ]),
    (r"^model\.encoder_input_proj\.", [(r"^model\.encoder_input_proj\.(\d+)\.0\.", r"encoder.input_proj.\1.conv."),
                                       (r"^model\.encoder_input_proj\.(\d+)\.1\.", r"encoder.input_proj.\1.norm.")]),
    (r"^model\.encoder\.(encoder|aifi)\.0\.layers\.0\.", [
        (r"^model\.encoder\.(encoder|aifi)\.0\.layers\.0\.", "encoder.aifi."),
        (r"\.self_attn_layer_norm\.", ".norm1."),
        (r"\.final_layer_norm\.", ".norm2."),
    ]),
    (r"^model\.encoder\.(fpn_blocks|pan_blocks|lateral_convs|downsample_convs)\.", [
        (r"^model\.encoder\.", "encoder."),
        (r"\.bottlenecks\.(\d+)\.conv1\.", r".blocks.\1.conv3x3."),
        (r"\.bottlenecks\.(\d+)\.conv2\.", r".blocks.\1.conv1x1."),
        (r"_blocks\.(\d+)\.conv([123])\.", r"_blocks.\1.cv\2."),
    ]),
    (r"^model\.decoder_input_proj\.", [(r"^model\.decoder_input_proj\.(\d+)\.0\.", r"decoder.input_proj.\1.conv."),
                                       (r"^model\.decoder_input_proj\.(\d+)\.1\.", r"decoder.input_proj.\1.norm.")]),
    (r"^(model\.decoder\.)?(class_embed|bbox_embed)\.", [
        (r"^(model\.decoder\.)?class_embed\.", "decoder.dec_score_head."),
        (r"^(model\.decoder\.)?bbox_embed\.", "decoder.dec_bbox_head."),
    ]),
    ((r"^model\.(decoder\.layers|decoder\.query_pos_head|enc_output|enc_score_head|enc_bbox_head|"
      r"denoising_class_embed)\."), [
        (r"^model\.(decoder\.)?", "decoder."),
        (r"\.self_attn_layer_norm\.", ".norm1."),
        (r"\.encoder_attn_layer_norm\.", ".norm2."),
        (r"\.final_layer_norm\.", ".norm3."),
        (r"\.encoder_attn\.", ".cross_attn."),
    ]),
]  # fmt: skip
_SHARED: list[Rule] = [
    (r"\.self_attn\.o_proj\.", ".self_attn.out_proj."),
    (r"\.(mlp\.)?fc1\.", ".linear1."),
    (r"\.(mlp\.)?fc2\.", ".linear2."),
]
# Buffers transformers keeps that our modules compute: batch-norm counters, RT-DETRv2's per-point offset scales.
_DROPPED = re.compile(r"(num_batches_tracked|encoder_attn\.n_points_scale)$")


def rename(key: str) -> str | None:
    """An RT-DETR / RT-DETRv2 key in either spelling -> ours, None for a buffer we compute, KeyError if unknown."""
    if _DROPPED.search(key):
        return None
    for prefix, rules in _RULES:
        if re.match(prefix, key):
            return apply_rules(apply_rules(key, rules), _SHARED)
    raise KeyError(key)


def _backbone(hf: dict[str, Any]) -> dict[str, Any]:
    resnet = {**RESNET_DEFAULTS, **(hf.get("backbone_config") or {})}
    if resnet.get("model_type", "rt_detr_resnet") != "rt_detr_resnet" or hf.get("use_timm_backbone"):
        raise CheckpointError(
            f"config.json: backbone {resnet.get('model_type')!r} is not supported (only rt_detr_resnet)"
        )
    require(resnet, "downsample_in_bottleneck", False)
    require(resnet, "downsample_in_first_stage", False)
    depths = [block_count(d, "backbone_config.depths") for d in resnet["depths"]]
    if "out_indices" not in (hf.get("backbone_config") or {}) and "out_features" in resnet:
        resnet["out_indices"] = [int(name.removeprefix("stage")) for name in resnet["out_features"]]
    # transformers counts the stem as stage 0: its out_indices 2, 3, 4 are our stages 1, 2, 3.
    stages = [block_count(i, "backbone_config.out_indices", len(depths)) - 1 for i in resnet["out_indices"]]
    return {
        "type": "resnet_vd",
        "depths": depths,
        "widths": list(resnet["hidden_sizes"]),
        "block": resnet["layer_type"],
        "stem": resnet["embedding_size"],
        "return_stages": stages,
        "act": resnet["hidden_act"],
        "freeze_norm": bool(hf.get("freeze_backbone_batch_norms", True)),
    }


def convert_config(hf: dict[str, Any], preprocessor: dict[str, Any] | None) -> dict[str, Any]:
    """A transformers RTDetrConfig / RTDetrV2Config (as JSON) -> our model config."""
    backbone = _backbone(hf)
    if hf.get("model_type") == "rt_detr_v2":
        require(hf, "decoder_n_levels", len(backbone["return_stages"]))
    method = hf.get("decoder_method", "default")
    if method not in SAMPLING:
        raise CheckpointError(f"config.json decoder_method={method!r} is not supported (only {list(SAMPLING)})")
    encoder = {"csp_blocks": 3, "lateral_act": hf.get("activation_function", "silu")}  # 3: fixed in CSPRepLayer
    decoder = {"type": "rtdetr", "sampling": SAMPLING[method], "eval_idx": -1}  # transformers returns the last layer
    return family_config(hf, preprocessor, backbone, encoder, decoder)


def convert_state(tensors: dict[str, torch.Tensor], where: str, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """transformers' tensors -> our state dict (anchors are computed by our decoder); CheckpointError naming
    `where` for a tensor no rule knows."""
    return rename_tensors(tensors, rename, where, config["nc"])
