"""DEIMv2 from transformers `save_pretrained` folders (see `huggingface`).

The config becomes ours: an HGNetv2 backbone (Atto to N) or DINOv3 with the spatial tuning adapter (S to X), the
hybrid encoder with DEIMv2's sum fusion and ELAN5 blocks or the lite encoder, and the D-FINE decoder with DEIMv2's
parts (RMSNorm, SwiGLU, optional gateway, shared box head). transformers' DEIMv2 differs from the official code
(see `official_deimv2`): ReLU in its heads, a projection before the proposal heads, query positions recomputed in
every layer; in the ViT-Tiny the last tap normed and no key bias (which the rotary embedding makes count). The
converted configs say so, to compute what the folder's model does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch

from ..errors import CheckpointError
from . import hf_dfine
from .hf_config import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    block_count,
    family_config,
    hgnetv2_backbone,
    rename_tensors,
    require,
)
from .mapping import Rule, apply_rules

_VIT: list[Rule] = [
    (r"^model\.conv_encoder\.backbone\.embeddings\.patch_embeddings\.", "backbone.patch_embed."),
    (r"^model\.conv_encoder\.backbone\.embeddings\.", "backbone."),
    (r"^model\.conv_encoder\.backbone\.(model\.)?layer\.", "backbone.blocks."),
    (r"^model\.conv_encoder\.backbone\.norm\.", "backbone.norm."),
    (r"\.attention\.o_proj\.", ".attn.out_proj."),
    (r"\.attention\.", ".attn."),
    (r"\.layer_scale([12])\.lambda1$", r".ls\1.gamma"),
    (r"^model\.conv_encoder\.spatial_tuning_adapter\.stem_conv\.", "backbone.adapter.stem."),
    (r"^model\.conv_encoder\.spatial_tuning_adapter\.conv2\.", "backbone.adapter.conv8."),
    (r"^model\.conv_encoder\.spatial_tuning_adapter\.conv3\.", "backbone.adapter.conv16."),
    (r"^model\.conv_encoder\.spatial_tuning_adapter\.conv4\.", "backbone.adapter.conv32."),
]
_GATED_MLP: list[Rule] = [(r"\.mlp\.(gate|up|down)_proj\.", r".mlp.\1.")]
_PLAIN_MLP: list[Rule] = [(r"\.mlp\.up_proj\.", ".mlp.fc1."), (r"\.mlp\.down_proj\.", ".mlp.fc2.")]
_ENCODER: list[Rule] = [
    (r"^model\.conv_encoder\.(encoder_input_proj|fusion_proj)\.", "encoder.input_proj."),
    (r"^model\.encoder\.aifi\.0\.layers\.0\.", "encoder.aifi."),
    (r"^model\.encoder\.", "encoder."),
    (r"\.csp_rep([12])\.conv1\.", r".branch\1.split."),
    (r"\.csp_rep([12])\.conv2\.", r".branch\1.merge."),
    (r"\.csp_rep([12])\.bottlenecks\.(\d+)\.conv1\.", r".branch\1.blocks.\2.conv3x3."),
    (r"\.csp_rep([12])\.bottlenecks\.(\d+)\.conv2\.", r".branch\1.blocks.\2.conv1x1."),
    (r"_block(s\.\d+)?\.conv1\.", r"_block\1.split."),
    (r"_block(s\.\d+)?\.conv2\.", r"_block\1.merge."),
    (r"^encoder\.down_conv([12])\.", r"encoder.down\1."),
    (r"^encoder\.bi_fusion_conv\.", "encoder.global_fusion."),
    *hf_dfine.SCDOWN_AIFI_RULES,
]
_DECODER: list[Rule] = [
    (r"^model\.decoder_input_proj\.(\d+)\.", r"decoder.input_proj.\1."),
    (r"\.encoder_attn_layer_norm\.", ".norm2."),
    (r"\.mlp\.(gate|up|down)_proj\.", r".swiglu.\1."),
    *hf_dfine.DECODER_RULES,
]
_DROPPED = re.compile(r"(num_batches_tracked|num_points_scale|^model\.decoder\.(reg_scale|up)|mask_token)$")


def renamer(config: dict[str, Any]) -> Callable[[str], str | None]:
    """The rename of this model's keys (a ViT's MLP names depend on whether it is gated)."""
    vit = _VIT + (_GATED_MLP if config["backbone"].get("gated_mlp") else _PLAIN_MLP)
    shared_box_head = bool(config["decoder"].get("share_bbox_head"))

    def rename(key: str) -> str | None:
        if _DROPPED.search(key):
            return None  # computed by our modules
        if shared_box_head:  # transformers saves the one shared head under any layer's index
            key = re.sub(r"^model\.decoder\.bbox_embed\.\d+\.", "model.decoder.bbox_embed.0.", key)
        if re.match(r"^model\.conv_encoder\.model\.", key):  # HGNetv2
            key = key.replace("model.conv_encoder.model.", "model.backbone.model.", 1)
            return apply_rules(key, hf_dfine.BACKBONE_RULES)
        if re.match(r"^model\.conv_encoder\.(backbone|spatial_tuning_adapter)\.", key):
            return apply_rules(key, vit)
        if re.match(r"^model\.(conv_encoder\.(encoder_input_proj|fusion_proj)|encoder)\.", key):
            return apply_rules(apply_rules(key, _ENCODER), hf_dfine.SHARED_RULES)
        if re.match(r"^model\.(decoder_input_proj|decoder|enc_output|enc_score_head|enc_bbox_head|"
                    r"denoising_class_embed)\.", key):  # fmt: skip
            return apply_rules(apply_rules(key, _DECODER), hf_dfine.SHARED_RULES)
        raise KeyError(key)

    return rename


def _vit_backbone(hf: dict[str, Any]) -> dict[str, Any]:
    vit = hf["backbone_config"]
    for name in ("query_bias", "value_bias", "proj_bias", "mlp_bias"):
        require(vit, name, True)
    require(vit, "hidden_act", "silu" if vit.get("use_gated_mlp") else "gelu")
    depth = block_count(vit.get("num_hidden_layers", 12), "backbone_config.num_hidden_layers")
    taps = [block_count(i, "backbone_config.out_indices", depth) - 1 for i in vit.get("out_indices", [])]
    if len(taps) != 3 or min(taps) < 0:
        raise CheckpointError(
            f"config.json backbone_config.out_indices={vit.get('out_indices')}: three blocks 1..{depth}"
        )
    return {
        "type": "dinov3",
        "patch_size": vit.get("patch_size", 16),
        "dim": vit["hidden_size"],
        "depth": depth,
        "num_heads": vit["num_attention_heads"],
        "ffn_dim": vit["intermediate_size"],
        "gated_mlp": bool(vit.get("use_gated_mlp", False)),
        "num_registers": vit.get("num_register_tokens", 0),
        "layer_scale": vit.get("layerscale_value", 1.0),
        "key_bias": bool(vit.get("key_bias", True)),
        "rope_theta": vit.get("rope_theta", 100.0),
        "norm_eps": vit.get("layer_norm_eps", 1e-5),
        "return_blocks": taps,
        "tap_norm": "all" if vit.get("apply_layernorm", True) else "last",  # transformers norms the last one anyway
        "adapter_width": hf.get("spatial_tuning_adapter_inplanes", 16),
        "adapter_norm_eps": hf.get("batch_norm_eps", 1e-5),
    }


def convert_config(hf: dict[str, Any], preprocessor: dict[str, Any] | None) -> dict[str, Any]:
    """A transformers Deimv2Config (as JSON) -> our model config."""
    require(hf, "decoder_method", "default")
    require(hf, "layer_scale", 1)
    kind = (hf.get("backbone_config") or {}).get("model_type")
    backbone = _vit_backbone(hf) if kind == "dinov3_vit" else hgnetv2_backbone(hf)
    lite = hf.get("encoder_type", "hybrid") == "lite"
    if hf.get("encoder_type", "hybrid") not in ("hybrid", "lite"):
        raise CheckpointError(f"config.json encoder_type={hf.get('encoder_type')!r} is not supported (hybrid, lite)")
    csp_blocks = round(3 * hf.get("depth_mult", 1.0))  # transformers' rule for the RepConv count
    trailing_conv = bool(hf.get("encoder_has_trailing_conv", True))
    if lite:
        encoder = {"type": "lite", "hidden_dim": hf.get("encoder_hidden_dim", 256), "csp_blocks": csp_blocks,
                   "expansion": hf.get("hidden_expansion", 1.0), "trailing_conv": trailing_conv,
                   "act": hf.get("activation_function", "silu"),
                   "norm_eps": hf.get("batch_norm_eps", 1e-5)}  # fmt: skip
    else:
        encoder = {"csp_blocks": csp_blocks, "lateral_act": None, "block": "elan5", "downsample": "scdown",
                   "fuse": hf.get("encoder_fuse_op", "sum"), "trailing_conv": trailing_conv}  # fmt: skip
    decoder = {
        "type": "dfine", "eval_idx": hf.get("eval_idx", -1), "reg_max": hf.get("max_num_bins", 32),
        "reg_scale": hf.get("reg_scale", 4.0), "up": hf.get("up", 0.5), "lqe_top_k": hf.get("top_prob_values", 4),
        "lqe_hidden_dim": hf.get("lqe_hidden_dim", 64), "lqe_layers": hf.get("lqe_layers", 2), "norm": "rms",
        "ffn": "swiglu", "gateway": bool(hf.get("use_gateway", True)),
        "share_bbox_head": bool(hf.get("share_bbox_head", False)), "query_pos_layers": 3,
        "query_pos_width": hf.get("d_model", 256), "query_pos_act": hf.get("decoder_activation_function", "relu"),
        "head_act": "relu", "query_pos_per_layer": True, "proposal_projection": True,  # transformers' DEIMv2
    }  # fmt: skip
    levels = 2 if lite else (3 if kind == "dinov3_vit" else None)
    config = family_config(hf, preprocessor, backbone, encoder, decoder, levels)
    if lite:
        config["encoder"] = encoder
    if kind == "dinov3_vit" and preprocessor is None:  # DINOv3 takes ImageNet-normalised pixels
        config["mean"], config["std"] = list(IMAGENET_MEAN), list(IMAGENET_STD)
    config["loss"].update(
        class_loss="mal", class_weight=hf.get("weight_loss_mal", 1.0), alpha=hf.get("mal_alpha") or 1.0,
        fgl_weight=hf.get("weight_loss_fgl", 0.15), ddf_weight=hf.get("weight_loss_ddf", 1.5),
        union_matching=bool(hf.get("use_dense_one_to_one", True)),
    )  # fmt: skip
    return config


def convert_state(tensors: dict[str, torch.Tensor], where: str, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """transformers' tensors -> our state dict; `reg_scale` and `up` from the tensors into `config`. CheckpointError
    naming `where` for a tensor no rule knows."""
    for name in ("reg_scale", "up"):
        value = tensors.get(f"model.decoder.{name}")
        if value is not None:
            config["decoder"][name] = float(value.reshape(-1)[0])
    return rename_tensors(tensors, renamer(config), where, config["nc"])
