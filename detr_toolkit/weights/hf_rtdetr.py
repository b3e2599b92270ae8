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
from .hf_config import block_count, input_settings, names_of, rename_tensors, require
from .mapping import Rule, apply_rules

# transformers' RTDetrResNetConfig defaults (R50-vd); hub configs store little more than the output stages.
RESNET_DEFAULTS = {"embedding_size": 64, "hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3],
                   "layer_type": "bottleneck", "hidden_act": "relu", "out_indices": [2, 3, 4]}  # fmt: skip
SAMPLING = {"default": "bilinear", "discrete": "discrete"}  # decoder_method -> our `sampling`
DEFAULT_SIZE = 640

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


def family_config(hf: dict[str, Any], preprocessor: dict[str, Any] | None, backbone: dict[str, Any],
                  encoder: dict[str, Any], decoder: dict[str, Any],
                  levels: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Our model config from the settings the RT-DETR family's transformers configs share (RT-DETR, RT-DETRv2,
    D-FINE, DEIMv2), with a family's `backbone` and its own `encoder` and `decoder` keys on top; `levels`: the
    decoder's feature levels (the backbone's returned stages by default). Settings our modules do not express are
    refused by name.

    `eval_size` is accepted and ignored: transformers then runs its encoder without position embeddings in eval
    mode, where the official code (whose training made the weights) uses the embedding of that size; we follow the
    official code.
    """
    for name, supported in (("normalize_before", False), ("learn_initial_query", False),
                            ("positional_encoding_temperature", 10000), ("layer_norm_eps", 1e-5)):  # fmt: skip
        require(hf, name, supported)
    levels = levels or len(backbone["return_stages"])
    if encoder.get("type", "hybrid") == "hybrid":
        require(hf, "encoder_layers", 1)
        require(hf, "encode_proj_layers", [levels - 1])  # attention on the coarsest level only
    require(hf, "num_feature_levels", levels)
    nc, names = names_of(hf, default_nc=80)
    imgsz, mean, std = input_settings(preprocessor, DEFAULT_SIZE, None, None)
    norm_eps = hf.get("batch_norm_eps", 1e-5)
    return {
        "nc": nc,
        "names": names,
        "imgsz": imgsz,
        "mean": mean,
        "std": std,
        "backbone": backbone,
        "encoder": {
            "type": "hybrid",
            "hidden_dim": hf.get("encoder_hidden_dim", 256),
            "ffn_dim": hf.get("encoder_ffn_dim", 1024),
            "num_heads": hf.get("encoder_attention_heads", 8),
            "attn_act": hf.get("encoder_activation_function", "gelu"),
            "expansion": hf.get("hidden_expansion", 1.0),
            "act": hf.get("activation_function", "silu"),
            "dropout": hf.get("dropout", 0.0),
            "norm_eps": norm_eps,
            **encoder,
        },
        "decoder": {
            "hidden_dim": hf.get("d_model", 256),
            "num_queries": hf.get("num_queries", 300),
            "num_layers": hf.get("decoder_layers", 6),
            "num_heads": hf.get("decoder_attention_heads", 8),
            "num_points": hf.get("decoder_n_points", 4),
            "offset_scale": hf.get("decoder_offset_scale", 0.5),
            "ffn_dim": hf.get("decoder_ffn_dim", 1024),
            "act": hf.get("decoder_activation_function", "relu"),
            "dropout": hf.get("dropout", 0.0),
            "num_denoising": hf.get("num_denoising", 100),
            "label_noise_ratio": hf.get("label_noise_ratio", 0.5),
            "box_noise_scale": hf.get("box_noise_scale", 1.0),
            "anchor_size": 0.05,  # fixed in transformers' anchor generation
            "eval_size": imgsz,
            "norm_eps": norm_eps,
            **decoder,
        },
        "loss": loss_section(hf),
    }


def loss_section(hf: dict[str, Any]) -> dict[str, Any]:
    """The varifocal loss and matcher costs of a transformers RT-DETR-family config (the official recipe's)."""
    return {
        "class_loss": "varifocal",
        "class_weight": hf.get("weight_loss_vfl", 1.0),
        "bbox_weight": hf.get("weight_loss_bbox", 5.0),
        "giou_weight": hf.get("weight_loss_giou", 2.0),
        "alpha": hf.get("focal_loss_alpha", 0.75),
        "gamma": hf.get("focal_loss_gamma", 2.0),
        "matcher": {
            "class_weight": hf.get("matcher_class_cost", 2.0),
            "bbox_weight": hf.get("matcher_bbox_cost", 5.0),
            "giou_weight": hf.get("matcher_giou_cost", 2.0),
            "alpha": hf.get("matcher_alpha", 0.25),
            "gamma": hf.get("matcher_gamma", 2.0),
        },
    }


def convert_state(tensors: dict[str, torch.Tensor], where: str, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """transformers' tensors -> our state dict (anchors are computed by our decoder); CheckpointError naming
    `where` for a tensor no rule knows."""
    return rename_tensors(tensors, rename, where, config["nc"])
