"""RF-DETR (detection and segmentation) and LW-DETR from transformers `save_pretrained` folders (see
`huggingface`) and rf-detr checkpoints.

The config becomes our model config (ViT backbone with projector, no encoder, LW-DETR decoder, and for
RfDetrForInstanceSegmentation a mask head); the tensors are renamed to our modules by the rules below.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from ..errors import CheckpointError
from .hf_config import DEFAULT_SIZE, IMAGENET_MEAN, IMAGENET_STD, block_count, input_settings, names_of
from .mapping import Rule, apply_rules, unpack_in_proj

MODEL_TYPES = ("rf_detr", "lw_detr")

# The decoder's modules, in any spelling below (each also under `model.` or `transformer.`).
DECODER_PARTS = ("decoder", "enc_output", "enc_output_norm", "enc_out_bbox_embed", "enc_out_class_embed", "class_embed",
                 "bbox_embed", "query_feat", "reference_point_embed", "refpoint_embed")  # fmt: skip
SEGMENTATION_PARTS = ("blocks", "spatial_features_proj", "query_features_block", "query_features_proj")
# Three spellings reach us: transformers' module names (`model.backbone.backbone...`), the names its
# `save_pretrained` writes back (RF-DETR: roboflow's original `backbone.0.encoder.encoder...` layout, the
# same as in rf-detr's .pth files; LW-DETR: `attention.attention.query...`), and mixtures of these.
# Each part's prefix picks a rule list; the rules then bring the rest to our names.
# RfDetrForInstanceSegmentation holds the detector under one more `model.`, beside its segmentation head.
_PARTS: list[tuple[str, str]] = [
    (r"^(model\.)?(model\.backbone\.backbone|backbone\.0\.encoder\.encoder)\.", "backbone."),
    (r"^(model\.)?(model\.backbone|backbone\.0)\.projector\.", "backbone.projector."),
    (r"^(model\.)?(model\.|transformer\.)?(?=(" + "|".join(DECODER_PARTS) + r")\.)", "decoder."),
    (r"^(segmentation_head\.|(?=(" + "|".join(SEGMENTATION_PARTS) + r")\.)|(?=segmentation_bias$))", "mask_head."),
]
_VIT_RULES: list[Rule] = [
    (r"^backbone\.embeddings\.(patch_embeddings\.)?projection\.", "backbone.patch_embed."),
    (r"^backbone\.embeddings\.position_embeddings$", "backbone.pos_embed"),
    (r"^backbone\.embeddings\.cls_token$", "backbone.cls_token"),
    (r"^backbone\.embeddings\.register_tokens$", "backbone.registers"),
    (r"^backbone\.layernorm\.", "backbone.norm."),
    (r"^backbone\.encoder\.layer\.", "backbone.blocks."),
    (r"\.attention\.attention\.query\.", ".attn.q_proj."),
    (r"\.attention\.attention\.key\.", ".attn.k_proj."),
    (r"\.attention\.attention\.value\.", ".attn.v_proj."),
    (r"\.attention\.(q|k|v)_proj\.", r".attn.\1_proj."),
    (r"\.attention\.(o_proj|output\.dense|output)\.", ".attn.out_proj."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.intermediate\.", ".mlp."),
    (r"\.(layer_scale1\.lambda1|gamma_1)$", ".ls1.gamma"),
    (r"\.(layer_scale2\.lambda1|gamma_2)$", ".ls2.gamma"),
]
_PROJECTOR_RULES: list[Rule] = [
    (r"^backbone\.projector\.projector_layer\.", "backbone.projector.levels.0.c2f."),  # RF-DETR, one level
    (r"^backbone\.projector\.layer_norm\.", "backbone.projector.levels.0.norm."),
    (r"^backbone\.projector\.scale_layers\.(\d+)\.projector_layer\.", r"backbone.projector.levels.\1.c2f."),
    (r"^backbone\.projector\.scale_layers\.(\d+)\.layer_norm\.", r"backbone.projector.levels.\1.norm."),
    (r"^backbone\.projector\.scale_layers\.(\d+)\.sampling_layers\.", r"backbone.projector.levels.\1.resample."),
    (r"^backbone\.projector\.stages\.(\d+)\.0\.", r"backbone.projector.levels.\1.c2f."),  # roboflow's layout
    (r"^backbone\.projector\.stages\.(\d+)\.1\.", r"backbone.projector.levels.\1.norm."),
    (r"\.resample\.(\d+)\.layers\.", r".resample.\1."),
    (r"\.c2f\.cv1\.", ".c2f.conv1."),
    (r"\.c2f\.cv2\.", ".c2f.conv2."),
    (r"\.c2f\.(bottlenecks|m)\.(\d+)\.(conv|cv)(\d)\.", lambda m: f".c2f.blocks.{m[2]}.{int(m[4]) - 1}."),
    (r"\.bn\.", ".norm."),
]
_DECODER_RULES: list[Rule] = [
    (r"^decoder\.(reference_point_embed|refpoint_embed)\.", "decoder.query_ref."),
    (r"^decoder\.enc_output\.(\d+)\.", r"decoder.enc_output.\1.0."),
    (r"^decoder\.enc_output_norm\.(\d+)\.", r"decoder.enc_output.\1.1."),
    (r"^decoder\.enc_out_bbox_embed\.", "decoder.enc_bbox_head."),
    (r"^decoder\.enc_out_class_embed\.", "decoder.enc_score_head."),
    (r"^decoder\.decoder\.(layernorm|norm)\.", "decoder.norm."),
    (r"^decoder\.decoder\.ref_point_head\.", "decoder.query_pos_head."),
    (r"^decoder\.decoder\.layers\.", "decoder.layers."),
    (r"^decoder\.class_embed\.", "decoder.score_head."),
    (r"^decoder\.bbox_embed\.", "decoder.bbox_head."),
    (r"\.self_attn\.o_proj\.", ".self_attn.out_proj."),
    (r"\.self_attn_layer_norm\.", ".norm1."),
    (r"\.cross_attn_layer_norm\.", ".norm2."),
    (r"\.mlp\.fc1\.", ".linear1."),
    (r"\.mlp\.fc2\.", ".linear2."),
    (r"\.layer_norm\.", ".norm3."),
]
_MASK_HEAD_RULES: list[Rule] = [  # transformers' module names, then roboflow's
    (r"^mask_head\.segmentation_bias$", "mask_head.bias"),
    (r"\.blocks\.(\d+)\.depthwise_conv\.", r".blocks.\1.dwconv."),
    (r"\.blocks\.(\d+)\.layernorm\.", r".blocks.\1.norm."),
    (r"\.blocks\.(\d+)\.(pointwise_conv|pwconv1)\.", r".blocks.\1.pwconv."),
    (r"^mask_head\.spatial_features_proj\.", "mask_head.pixel_proj."),
    (r"^mask_head\.query_features_block\.(norm|norm_in)\.", "mask_head.query_block.norm."),
    (r"^mask_head\.query_features_block\.(mlp\.fc1|layers\.0)\.", "mask_head.query_block.fc1."),
    (r"^mask_head\.query_features_block\.(mlp\.fc2|layers\.2)\.", "mask_head.query_block.fc2."),
    (r"^mask_head\.query_features_proj\.", "mask_head.query_proj."),
]
_RULES = [_VIT_RULES, _PROJECTOR_RULES, _DECODER_RULES, _MASK_HEAD_RULES]
_DROPPED = re.compile(r"(mask_token|num_batches_tracked)$")


def rename(key: str) -> str | None:
    """An RF-DETR / LW-DETR state-dict key in any of the spellings above -> ours, or None for keys we drop."""
    if _DROPPED.search(key):
        return None
    for (prefix, replacement), rules in zip(_PARTS, _RULES):
        if re.match(prefix, key):
            return apply_rules(re.sub(prefix, replacement, key, count=1), rules)
    raise KeyError(key)


def convert_config(hf: dict[str, Any], preprocessor: dict[str, Any] | None) -> dict[str, Any]:
    """A transformers RfDetrConfig / LwDetrConfig (as JSON) -> our model config."""
    vit = hf.get("backbone_config") or {}
    backbone = _backbone_section(hf, vit)
    nc, names = names_of(hf, default_nc=91)
    stride = backbone["patch_size"] * backbone["window_grid"]
    # Without a preprocessor config: the position grid's size rounded up to whole windows (DINOv2's 518 -> 560).
    default_size = -(-vit["image_size"] // stride) * stride if hf.get("model_type") == "rf_detr" else DEFAULT_SIZE
    imgsz, mean, std = input_settings(preprocessor, default_size, IMAGENET_MEAN, IMAGENET_STD)
    config = {
        "nc": nc,
        "names": names,
        "imgsz": imgsz,
        "mean": mean,
        "std": std,
        "backbone": backbone,
        "encoder": {"type": "none"},
        "decoder": _decoder_section(hf),
        "loss": _loss_section(hf),
    }
    if "RfDetrForInstanceSegmentation" in (hf.get("architectures") or []):
        config["mask_head"] = mask_head_section(hf)
        config["loss"] = mask_loss_section(hf, config["loss"], imgsz // config["mask_head"]["downsample"])
    return config


def mask_loss_section(hf: dict[str, Any], loss: dict[str, Any], mask_size: int) -> dict[str, Any]:
    """`loss` with RF-DETR-Seg's mask terms: its BCE and dice coefficients, in the loss and in the matcher's costs,
    at one point in `mask_point_sample_ratio` of the (mask_size x mask_size) mask logits' pixels (at least a row's)."""
    bce, dice = hf.get("mask_class_loss_coefficient", 5.0), hf.get("mask_dice_loss_coefficient", 5.0)
    ratio = hf.get("mask_point_sample_ratio", 16)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio < 1 or ratio != int(ratio):
        raise ValueError(f"mask_point_sample_ratio {ratio!r}: a whole number >= 1 (mask pixels per sampled point)")
    points = max(mask_size, mask_size * mask_size // int(ratio))
    return {**loss, "mask_weight": bce, "dice_weight": dice, "mask_points": points,
            "matcher": {**loss["matcher"], "mask_weight": bce, "dice_weight": dice, "mask_points": points}}  # fmt: skip


def mask_head_section(hf: dict[str, Any]) -> dict[str, Any]:
    """Our mask head section from an RF-DETR-Seg config: one pixel block per decoder layer."""
    return {
        "type": "rfdetr",
        "num_blocks": hf.get("decoder_layers", 3),
        "ffn_dim": hf.get("intermediate_size", 1024),
        "downsample": hf.get("mask_downsample_ratio", 4),
        "act": hf.get("segmentation_head_activation_function", "gelu"),
    }


def _backbone_section(hf: dict[str, Any], vit: dict[str, Any]) -> dict[str, Any]:
    """Our ViT backbone section (with its projector) from RF-DETR's DINOv2 or LW-DETR's CAEv2 `backbone_config`."""
    # The numbers that sizes below are computed from are checked first: a config of a few bytes must not make a
    # list of ten billion block indices before the model config's own checks run.
    depth = block_count(vit["num_hidden_layers"], "backbone_config.num_hidden_layers")
    stages = [block_count(stage, "backbone_config.out_indices", depth + 1) for stage in vit["out_indices"]]
    if hf.get("model_type") == "rf_detr":
        if vit.get("use_swiglu_ffn"):
            raise CheckpointError("RF-DETR with a SwiGLU ViT is not supported yet")
        listed = vit.get("window_block_indexes")
        windowed = (
            {block_count(i, "backbone_config.window_block_indexes", depth) for i in listed}
            if listed
            else set(range(max(stages, default=0) + 1)) - set(stages)
        )
        backbone = {
            "patch_size": vit["patch_size"],
            "pos_embed_size": vit["image_size"] // vit["patch_size"],
            "pos_embed_antialias": True,
            "class_token": True,
            "window_grid": vit.get("num_windows", 4),
            "out_norm": vit.get("apply_layernorm", True),
            "layer_scale": vit.get("layerscale_value", 1.0),
        }
        projector = {"scale_factors": [1.0], "norm": "layer", "norm_eps": hf.get("layer_norm_eps", 1e-5)}
    else:
        pretrain = vit.get("pretrain_image_size", 224)
        windowed = {
            block_count(i, "backbone_config.window_block_indices", depth) for i in vit.get("window_block_indices") or []
        }
        backbone = {
            "patch_size": vit["patch_size"],
            "pos_embed_size": (pretrain if isinstance(pretrain, int) else pretrain[0]) // vit["patch_size"],
            "pos_embed_antialias": False,
            "class_token": False,
            "window_grid": math.isqrt(vit.get("num_windows", 16)),
            "out_norm": False,
            "layer_scale": vit.get("cae_init_values", 0.1),
        }
        projector = {
            "scale_factors": list(hf["projector_scale_factors"]),
            "norm": "batch",
            "norm_eps": hf.get("batch_norm_eps", 1e-5),
        }
    projector.update(
        out_channels=hf.get("d_model", 256),
        blocks=hf.get("c2f_num_blocks", 3),
        expansion=hf.get("hidden_expansion", 0.5),
        act=hf.get("activation_function", "silu"),
    )
    return {
        "type": "vit",
        "dim": vit["hidden_size"],
        "depth": depth,
        "num_heads": vit["num_attention_heads"],
        "mlp_ratio": vit.get("mlp_ratio", 4),
        **backbone,
        "global_blocks": [i for i in range(depth) if i not in windowed],
        "out_indices": [stage - 1 for stage in stages],  # stage i is the output of block i - 1
        "norm_eps": vit.get("layer_norm_eps", 1e-6),
        "act": vit.get("hidden_act", "gelu"),
        "projector": projector,
    }


def _decoder_section(hf: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "lwdetr",
        "hidden_dim": hf.get("d_model", 256),
        "num_queries": hf.get("num_queries", 300),
        "num_layers": hf.get("decoder_layers", 3),
        "num_heads": hf.get("decoder_self_attention_heads", 8),
        "cross_heads": hf.get("decoder_cross_attention_heads", 16),
        "num_points": hf.get("decoder_n_points", 4),
        "ffn_dim": hf.get("decoder_ffn_dim", 2048),
        "act": hf.get("decoder_activation_function", "relu"),
        "dropout": hf.get("dropout", 0.0),
        "num_groups": hf.get("group_detr", 13),
    }


def _loss_section(hf: dict[str, Any]) -> dict[str, Any]:
    return {
        "class_loss": "ia_bce",
        "class_weight": hf.get("class_loss_coefficient", 1.0),
        "bbox_weight": hf.get("bbox_loss_coefficient", 5.0),
        "giou_weight": hf.get("giou_loss_coefficient", 2.0),
        "alpha": hf.get("focal_alpha", 0.25),
        "matcher": {"class_weight": hf.get("class_cost", 2.0), "bbox_weight": hf.get("bbox_cost", 5.0),
                    "giou_weight": hf.get("giou_cost", 2.0), "alpha": hf.get("focal_alpha", 0.25)},
    }  # fmt: skip


def convert_state(tensors: dict[str, torch.Tensor], where: str, config: dict | None = None) -> dict[str, torch.Tensor]:
    """RF-DETR / LW-DETR tensors in any spelling above -> our state dict; CheckpointError naming `where` for a
    tensor no rule knows."""
    state: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        try:
            new = rename(key)
        except KeyError:
            raise CheckpointError(f"{where}: unexpected tensor {key!r}") from None
        if new is not None:
            state.update(unpack_in_proj(new, tensor))
    for key in [k for k in state if k.endswith(".attn.k_proj.weight")]:  # LW-DETR's ViT has no key bias
        state.setdefault(key[: -len("weight")] + "bias", torch.zeros(state[key].shape[0], dtype=state[key].dtype))
    return state
