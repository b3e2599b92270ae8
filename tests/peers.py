"""Reference checkpoints written by the peers (ultralytics, transformers), built offline with random weights.

A freshly initialised detector is degenerate: activations fade through the deep backbone, every query
sees the same features, and every score sits near the 0.01 prior. So batch-norm statistics are
calibrated on real photos and the weights are perturbed, until scores spread over 0..1 and detections
differ in class, size and confidence, which is what a parity test needs.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import yaml

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def photos(size: int = 640) -> torch.Tensor:
    """The two sample photos, stretched to size x size: (2, 3, size, size) RGB in 0..1."""
    import cv2
    import numpy as np

    images = [cv2.resize(cv2.imread(str(ASSETS / n)), (size, size)) for n in ("bus.jpg", "zidane.jpg")]
    return torch.from_numpy(np.stack(images)[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255


def make_realistic_(model: torch.nn.Module, images: torch.Tensor, seed: int = 0) -> None:
    """Perturb every parameter with seeded noise, then calibrate batch norms on `images`; leaves eval mode.

    The result is deliberately rough: float32 rounding grows through it to about 1e-3 on the logits
    (ultralytics' own float32 vs float64), so exact-maths checks are made in float64.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "score_head" in name:  # class priors around 1%: some confident detections, most not
                prior = -4.5 + math.log(80 / param.shape[0])  # fewer classes, fewer chances to score high
                param.copy_(noise * 0.05 if name.endswith("weight") else noise + prior)
                continue
            std = max(param.std().item() if param.numel() > 1 else 0.0, 0.02)
            param.add_((noise * std * 0.5).to(param.dtype))
        batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        model.eval()
        for bn in batch_norms:
            bn.reset_running_stats()
            bn.momentum, bn.training = None, True  # cumulative average over this one batch
        # Frozen batch norms (buffers only) take the statistics of what reaches them, before they apply them.
        frozen = [m for m in model.modules() if type(m).__name__.endswith("FrozenBatchNorm2d")]
        hooks = [m.register_forward_pre_hook(_take_statistics) for m in frozen]
        model(images)
        for hook in hooks:
            hook.remove()
        for bn in batch_norms:
            bn.momentum, bn.training = 0.03, False


def _take_statistics(norm: torch.nn.Module, inputs: tuple[torch.Tensor]) -> None:
    norm.running_mean.copy_(inputs[0].mean((0, 2, 3)))
    norm.running_var.copy_(inputs[0].var((0, 2, 3)))


def ultralytics_checkpoint(directory: Path, arch: str = "rtdetr-l", nc: int | None = None, seed: int = 0) -> Path:
    """Build ultralytics' RTDETR(arch.yaml) (optionally with `nc` classes), perturb it, save it; return the .pt."""
    from ultralytics import RTDETR
    from ultralytics.utils import ROOT

    spec = yaml.safe_load((ROOT / "cfg" / "models" / "rt-detr" / f"{arch}.yaml").read_text())
    if nc is not None:
        spec["nc"] = nc
    spec_file = directory / f"{arch}-{spec['nc']}.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    torch.manual_seed(seed)
    model = RTDETR(str(spec_file))
    make_realistic_(model.model, photos(), seed)
    model.model.names = {i: f"class{i}" for i in range(spec["nc"])}
    path = directory / f"{arch}-{spec['nc']}.pt"
    model.save(str(path))
    return path


# Small RF-DETR and LW-DETR shapes (a DINOv2-style ViT with a class token and windows of a 2x2 grid; LW-DETR's
# ViT with two projector levels), so that CI builds, saves and runs them in seconds.
TRANSFORMERS_SPECS = {
    "rf_detr": {
        "input_size": 224,
        "backbone_config": {
            "model_type": "rf_detr_dinov2", "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 2,
            "image_size": 112, "patch_size": 14, "num_windows": 2, "out_features": ["stage1", "stage3"],
        },
        "d_model": 64, "decoder_layers": 2, "decoder_ffn_dim": 128, "num_queries": 30, "group_detr": 3,
        "decoder_n_points": 2, "decoder_self_attention_heads": 4, "decoder_cross_attention_heads": 8,
        "c2f_num_blocks": 1,
    },
    "lw_detr": {
        "input_size": 256,
        "backbone_config": {
            "model_type": "lw_detr_vit", "hidden_size": 96, "num_hidden_layers": 4, "num_attention_heads": 3,
            "image_size": 256, "pretrain_image_size": 128, "patch_size": 16, "num_windows": 4,
            "window_block_indices": [0, 2], "out_indices": [2, 4],
        },
        "projector_scale_factors": [2.0, 0.5], "d_model": 64, "decoder_layers": 2, "decoder_ffn_dim": 128,
        "num_queries": 30, "group_detr": 3, "decoder_n_points": 2, "decoder_self_attention_heads": 4,
        "decoder_cross_attention_heads": 8, "c2f_num_blocks": 1,
    },
    # RT-DETR with a basic-block ResNet-vd (R18/R34 style), trainable batch norms.
    "rt_detr": {
        "input_size": 192,
        "backbone_config": {
            "model_type": "rt_detr_resnet", "layer_type": "basic", "depths": [1, 1, 1, 1], "embedding_size": 32,
            "hidden_sizes": [32, 64, 128, 256], "out_indices": [2, 3, 4],
        },
        "freeze_backbone_batch_norms": False, "encoder_in_channels": [64, 128, 256], "encoder_hidden_dim": 64,
        "encoder_ffn_dim": 128, "encoder_attention_heads": 4, "hidden_expansion": 0.5, "d_model": 64,
        "decoder_in_channels": [64, 64, 64], "decoder_ffn_dim": 128, "decoder_layers": 2,
        "decoder_attention_heads": 4, "decoder_n_points": 2, "num_queries": 30,
    },
    # RT-DETRv2 with a bottleneck ResNet-vd (R50/R101 style) and frozen batch norms, an encoder wider than the
    # decoder (as R101), 3 points per level at a non-default offset scale.
    "rt_detr_v2": {
        "input_size": 160,
        "backbone_config": {
            "model_type": "rt_detr_resnet", "layer_type": "bottleneck", "depths": [1, 2, 1, 1],
            "embedding_size": 32, "hidden_sizes": [64, 128, 256, 512], "out_indices": [2, 3, 4],
        },
        "encoder_in_channels": [128, 256, 512], "encoder_hidden_dim": 96, "encoder_ffn_dim": 128,
        "encoder_attention_heads": 4, "d_model": 64, "decoder_in_channels": [96, 96, 96], "decoder_ffn_dim": 128,
        "decoder_layers": 3, "decoder_attention_heads": 4, "decoder_n_points": 3, "decoder_offset_scale": 0.7,
        "num_queries": 30,
    },
}  # fmt: skip
# D-FINE with a narrow HGNetv2 (learnable affine blocks, frozen batch norms), 3 levels, points per level.
TRANSFORMERS_SPECS["d_fine"] = {
    "input_size": 160,
    "backbone_config": {
        "model_type": "hgnet_v2",
        "stem_channels": [3, 8, 8],
        "stage_in_channels": [8, 16, 32, 64],
        "stage_mid_channels": [8, 8, 16, 16],
        "stage_out_channels": [16, 32, 64, 128],
        "hidden_sizes": [16, 32, 64, 128],
        "stage_num_blocks": [1, 1, 2, 1],
        "stage_downsample": [False, True, True, True],
        "stage_light_block": [False, False, True, True],
        "stage_kernel_size": [3, 3, 5, 5],
        "stage_numb_of_layers": [2, 2, 2, 2],
        "use_learnable_affine_block": True,
        "out_indices": [2, 3, 4],
    },
    "encoder_in_channels": [32, 64, 128],
    "encoder_hidden_dim": 32,
    "encoder_ffn_dim": 64,
    "encoder_attention_heads": 4,
    "hidden_expansion": 0.5,
    "depth_mult": 0.34,
    "d_model": 32,
    "decoder_in_channels": [32, 32, 32],
    "decoder_ffn_dim": 64,
    "decoder_layers": 3,
    "decoder_attention_heads": 4,
    "decoder_n_points": [2, 3, 2],
    "num_queries": 30,
}
# D-FINE-X's shape: an encoder wider than the decoder (projected inputs), a wider weighting (reg_scale 8).
TRANSFORMERS_SPECS["d_fine_wide"] = {
    **TRANSFORMERS_SPECS["d_fine"],
    "encoder_hidden_dim": 48,
    "decoder_in_channels": [48, 48, 48],
    "reg_scale": 8.0,
    "depth_mult": 1.0,
}
# DEIMv2's three shapes: a 3-stage HGNetv2 into the lite encoder (Atto-Pico: one stride-16 map, shared box head, no
# gateway), a 4-stage HGNetv2 into the hybrid encoder (N), DINOv3 with the spatial tuning adapter (S-X; a gated MLP,
# registers and normed taps as ViT-S+, or plain taps without key bias as ViT-Tiny).
HGNETV2_3_STAGES = {
    "model_type": "hgnet_v2", "stem_channels": [3, 8, 8], "stage_in_channels": [8, 16, 32],
    "stage_mid_channels": [8, 8, 16], "stage_out_channels": [16, 32, 64], "hidden_sizes": [16, 32, 64],
    "depths": [1, 1, 1], "embedding_size": 8, "stage_num_blocks": [1, 1, 2], "stage_downsample": [False, True, True],
    "stage_light_block": [False, False, True], "stage_kernel_size": [3, 3, 5], "stage_numb_of_layers": [2, 2, 2],
    "use_learnable_affine_block": True, "out_indices": [3],
}  # fmt: skip
DEIMV2_DECODER = {"decoder_activation_function": "silu", "decoder_layers": 3, "decoder_attention_heads": 4,
                  "num_queries": 30, "encoder_attention_heads": 4}  # fmt: skip
TRANSFORMERS_SPECS["deimv2_lite"] = {
    "input_size": 160, "backbone_config": HGNETV2_3_STAGES, "encoder_type": "lite", "encoder_in_channels": [64],
    "encoder_hidden_dim": 32, "encoder_layers": 0, "hidden_expansion": 0.34, "depth_mult": 0.5, "d_model": 32,
    "decoder_in_channels": [32, 32], "feat_strides": [16, 32], "num_feature_levels": 2, "decoder_n_points": [4, 2],
    "decoder_ffn_dim": 64, "share_bbox_head": True, "use_gateway": False, **DEIMV2_DECODER,
}  # fmt: skip
TRANSFORMERS_SPECS["deimv2_hgnet"] = {
    "input_size": 160, "backbone_config": {**TRANSFORMERS_SPECS["d_fine"]["backbone_config"], "out_indices": [3, 4]},
    "encoder_in_channels": [64, 128], "encoder_hidden_dim": 32, "encoder_ffn_dim": 64, "hidden_expansion": 0.34,
    "depth_mult": 0.5, "d_model": 32, "decoder_in_channels": [32, 32], "feat_strides": [16, 32],
    "num_feature_levels": 2, "encode_proj_layers": [1], "decoder_n_points": [6, 6], "decoder_ffn_dim": 64,
    **DEIMV2_DECODER,
}  # fmt: skip
DINOV3 = {"model_type": "dinov3_vit", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
          "patch_size": 16, "out_indices": [2, 3, 4]}  # fmt: skip
TRANSFORMERS_SPECS["deimv2_dinov3"] = {
    "input_size": 160,
    "backbone_config": {**DINOV3, "intermediate_size": 128, "use_gated_mlp": True, "hidden_act": "silu",
                        "num_register_tokens": 4, "layerscale_value": 0.5, "apply_layernorm": True},
    "spatial_tuning_adapter_inplanes": 8, "encoder_in_channels": [48, 48, 48], "encoder_hidden_dim": 48,
    "encoder_ffn_dim": 96, "hidden_expansion": 0.67, "depth_mult": 0.67, "encoder_has_trailing_conv": False,
    "d_model": 48, "decoder_in_channels": [48, 48, 48], "decoder_n_points": [3, 6, 3], "decoder_ffn_dim": 96,
    **DEIMV2_DECODER,
}  # fmt: skip
TRANSFORMERS_SPECS["deimv2_vit_tiny"] = {
    **TRANSFORMERS_SPECS["deimv2_dinov3"],
    "backbone_config": {**DINOV3, "intermediate_size": 256, "key_bias": False, "apply_layernorm": False},
}
# RF-DETR-Seg: the same detector with RfDetrForInstanceSegmentation's mask head (a pixel block per decoder layer).
TRANSFORMERS_SPECS["rf_detr_seg"] = {**TRANSFORMERS_SPECS["rf_detr"], "intermediate_size": 96}
# The settings official checkpoints do not store, as every released one has them: 8 heads and 4 points per level
# (v1), offset scale 0.5 (v2), 300 queries.
OFFICIAL = {"encoder_attention_heads": 8, "decoder_attention_heads": 8, "num_queries": 300}
TRANSFORMERS_SPECS["rt_detr_official"] = {**TRANSFORMERS_SPECS["rt_detr"], **OFFICIAL, "decoder_n_points": 4}
TRANSFORMERS_SPECS["rt_detr_v2_official"] = {
    **TRANSFORMERS_SPECS["rt_detr_v2"],
    **OFFICIAL,
    "decoder_offset_scale": 0.5,
}
# The same RT-DETRv2 with "discrete" sampling (nearest pixels, no GridSample).
TRANSFORMERS_SPECS["rt_detr_v2_discrete"] = {**TRANSFORMERS_SPECS["rt_detr_v2"], "decoder_method": "discrete"}
TRANSFORMERS_SPECS["rt_detr_v2_official_discrete"] = {**TRANSFORMERS_SPECS["rt_detr_v2_official"],
                                                      "decoder_method": "discrete"}  # fmt: skip
# kind -> transformers' config, model and image processor classes, and whether the model takes ImageNet-normalised
# pixels (RT-DETR takes 0..1 RGB as it is).
TRANSFORMERS_CLASSES = {
    "rf_detr": ("RfDetrConfig", "RfDetrForObjectDetection", "RfDetrImageProcessor", True),
    "rf_detr_seg": ("RfDetrConfig", "RfDetrForInstanceSegmentation", "RfDetrImageProcessor", True),
    "lw_detr": ("LwDetrConfig", "LwDetrForObjectDetection", "RfDetrImageProcessor", True),
    "rt_detr": ("RTDetrConfig", "RTDetrForObjectDetection", "RTDetrImageProcessor", False),
    "rt_detr_v2": ("RTDetrV2Config", "RTDetrV2ForObjectDetection", "RTDetrImageProcessor", False),
    "rt_detr_v2_discrete": ("RTDetrV2Config", "RTDetrV2ForObjectDetection", "RTDetrImageProcessor", False),
    "rt_detr_official": ("RTDetrConfig", "RTDetrForObjectDetection", "RTDetrImageProcessor", False),
    "d_fine": ("DFineConfig", "DFineForObjectDetection", "RTDetrImageProcessor", False),
    "d_fine_wide": ("DFineConfig", "DFineForObjectDetection", "RTDetrImageProcessor", False),
    "deimv2_lite": ("Deimv2Config", "Deimv2ForObjectDetection", "RTDetrImageProcessor", False),
    "deimv2_hgnet": ("Deimv2Config", "Deimv2ForObjectDetection", "RTDetrImageProcessor", False),
    "deimv2_dinov3": ("Deimv2Config", "Deimv2ForObjectDetection", "RTDetrImageProcessor", True),
    "deimv2_vit_tiny": ("Deimv2Config", "Deimv2ForObjectDetection", "RTDetrImageProcessor", True),
    "rt_detr_v2_official": ("RTDetrV2Config", "RTDetrV2ForObjectDetection", "RTDetrImageProcessor", False),
    "rt_detr_v2_official_discrete": ("RTDetrV2Config", "RTDetrV2ForObjectDetection", "RTDetrImageProcessor", False),
}

# transformers' names -> the official lyuwenyu/RT-DETR names, as transformers' conversion scripts read the released
# files (checked against modules built from the official code: the tensors and their order). v1 and v2 differ in
# two modules' child names.
OFFICIAL_NAMES = [
    (r"^model\.backbone\.model\.embedder\.embedder\.(\d)\.", lambda m: f"backbone.conv1.conv1_{int(m[1]) + 1}."),
    (r"^model\.backbone\.model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.", r"backbone.res_layers.\1.blocks.\2."),
    (r"\.layer\.(\d)\.", lambda m: f".branch2{'abc'[int(m[1])]}."),
    (r"\.shortcut\.1\.", ".short.conv."),
    (r"\.shortcut\.", ".short."),
    (r"\.convolution\.", ".conv."),
    (r"\.normalization\.", ".norm."),
    (r"^model\.encoder\.(encoder|aifi)\.0\.layers\.0\.", "encoder.encoder.0.layers.0."),
    (r"^model\.encoder\.", "encoder."),
    (r"^model\.encoder_input_proj\.(\d+)\.", r"encoder.input_proj.\1."),
    (r"^model\.decoder_input_proj\.(\d+)\.0\.", r"decoder.input_proj.\1.conv."),
    (r"^model\.decoder_input_proj\.(\d+)\.1\.", r"decoder.input_proj.\1.norm."),
    (r"^model\.decoder\.class_embed\.", "decoder.dec_score_head."),
    (r"^model\.decoder\.bbox_embed\.", "decoder.dec_bbox_head."),
    (r"^model\.decoder\.layers\.", "decoder.decoder.layers."),
    (r"^model\.(decoder\.)?", "decoder."),
    (r"\.self_attn\.o_proj\.", ".self_attn.out_proj."),
    (r"\.self_attn_layer_norm\.", ".norm1."),
    (r"\.encoder_attn_layer_norm\.", ".norm2."),
    (r"^(decoder\..*)\.final_layer_norm\.", r"\1.norm3."),
    (r"\.final_layer_norm\.", ".norm2."),
    (r"\.encoder_attn\.n_points_scale$", ".cross_attn.num_points_scale"),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"\.(mlp\.)?fc([12])\.", r".linear\2."),
]
OFFICIAL_V2_NAMES = [(r"^encoder\.input_proj\.(\d+)\.0\.", r"encoder.input_proj.\1.conv."),
                     (r"^encoder\.input_proj\.(\d+)\.1\.", r"encoder.input_proj.\1.norm."),
                     (r"^decoder\.enc_output\.0\.", "decoder.enc_output.proj."),
                     (r"^decoder\.enc_output\.1\.", "decoder.enc_output.norm.")]  # fmt: skip
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def transformers_model(kind: str, nc: int = 5, seed: int = 0):
    """transformers' RfDetrForObjectDetection / LwDetrForObjectDetection of TRANSFORMERS_SPECS[kind], perturbed
    and batch-norm calibrated on the photos like the ultralytics peers; class scores around a 5% prior."""
    import transformers

    spec = dict(TRANSFORMERS_SPECS[kind])
    size = spec.pop("input_size")
    config_name, model_name, _, _ = TRANSFORMERS_CLASSES[kind]
    config = getattr(transformers, config_name)(**spec, num_labels=nc, id2label={i: f"class{i}" for i in range(nc)})
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config)

    make_realistic_(PixelsIn(model, kind), photos(size), seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "class_embed" in name:  # scores spread around a 5% prior, from query to query
                param.normal_(math.log(0.05 / 0.95), 0.5) if name.endswith("bias") else param.normal_(0, 0.4)
    return model.eval(), size


class PixelsIn(torch.nn.Module):
    """transformers' model of `kind` taking our convention: (B, 3, H, W) RGB in 0..1."""

    def __init__(self, peer, kind: str):
        super().__init__()
        self.peer, self.kind = peer, kind

    def forward(self, images):
        return self.peer(pixel_values=pixel_values(self.kind, images))


def pixel_values(kind: str, images: torch.Tensor) -> torch.Tensor:
    """What transformers' model of `kind` takes for (B, 3, H, W) RGB in 0..1."""
    return (images - IMAGENET_MEAN) / IMAGENET_STD if TRANSFORMERS_CLASSES[kind][3] else images


def image_processor(kind: str):
    """transformers' image processor of `kind` (for its post-processing), with its defaults."""
    import transformers

    return getattr(transformers, TRANSFORMERS_CLASSES[kind][2])()


def official_checkpoint(directory: Path, kind: str, name: str | None = None, model=None):
    """`transformers_model(kind)`'s weights (or `model`'s) as the official RT-DETR (v1) / RT-DETRv2 solver saves
    them: {"model": state dict, "ema": {"module": state dict, ...}, "last_epoch": ...}, with packed attention
    projections; -> (the .pth, the peer model, input size)."""
    import re

    model, size = (model, None) if model is not None else transformers_model(kind)
    rules = OFFICIAL_NAMES + (OFFICIAL_V2_NAMES if kind.startswith("rt_detr_v2") else [])
    state = {}
    for key, tensor in model.state_dict().items():
        if re.match(r"(class|bbox)_embed\.", key):  # transformers' top-level aliases of the decoder's heads
            continue
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        state[key] = tensor
    for key in [k for k in state if k.endswith("self_attn.q_proj.weight")]:
        prefix = key[: -len("q_proj.weight")]
        for kind_ in ("weight", "bias"):
            parts = [state.pop(f"{prefix}{p}_proj.{kind_}") for p in "qkv"]
            state[f"{prefix}in_proj_{kind_}"] = torch.cat(parts)
    path = directory / (name or f"{kind}.pth")
    torch.save({"model": {k: v * 0 for k, v in state.items()}, "ema": {"module": state, "updates": 7},
                "last_epoch": 71}, path)  # fmt: skip
    return path, model, size


def roboflow_args(kind: str, size: int, **extra):
    """The training arguments rf-detr saves beside its tensors (an argparse Namespace), for the peer of `kind`."""
    import argparse

    spec = TRANSFORMERS_SPECS[kind]
    vit = spec["backbone_config"]
    return argparse.Namespace(
        encoder="dinov2_windowed_small", patch_size=vit["patch_size"], num_windows=vit["num_windows"],
        positional_encoding_size=vit["image_size"] // vit["patch_size"], out_feature_indexes=[1, 3],
        hidden_dim=spec["d_model"], dec_layers=spec["decoder_layers"], sa_nheads=4, ca_nheads=8, dec_n_points=2,
        dim_feedforward=spec["decoder_ffn_dim"], num_queries=spec["num_queries"], group_detr=spec["group_detr"],
        projector_scale=["P4"], resolution=size, num_classes=4, **extra,
    )  # fmt: skip


def transformers_checkpoint(directory: Path, kind: str, nc: int = 5, seed: int = 0) -> tuple[Path, int]:
    """`save_pretrained` folder of `transformers_model(kind)`, and the input size it is meant for."""
    model, size = transformers_model(kind, nc, seed)
    folder = directory / kind
    model.save_pretrained(folder)
    return folder, size


# transformers' configs of the published sizes (as its conversion scripts write them), by our config's name:
# (config class, keyword arguments). tests/test_families.py checks our configs against them; the benchmarks build
# peers of these shapes.
RESNET = {"model_type": "rt_detr_resnet", "out_indices": [2, 3, 4]}
BASIC = {**RESNET, "layer_type": "basic", "hidden_sizes": [64, 128, 256, 512]}
SMALL = {"encoder_in_channels": [128, 256, 512], "hidden_expansion": 0.5}
R101 = {"backbone_config": {**RESNET, "depths": [3, 4, 23, 3]}, "encoder_hidden_dim": 384, "encoder_ffn_dim": 2048,
        "decoder_in_channels": [384, 384, 384]}  # fmt: skip
PEER_CONFIGS = {
    "rtdetr-r18": ("RTDetrConfig", {"backbone_config": {**BASIC, "depths": [2, 2, 2, 2]}, **SMALL,
                                    "decoder_layers": 3}),
    "rtdetr-r34": ("RTDetrConfig", {"backbone_config": {**BASIC, "depths": [3, 4, 6, 3]}, **SMALL,
                                    "decoder_layers": 4}),
    "rtdetr-r50": ("RTDetrConfig", {"backbone_config": RESNET}),
    "rtdetr-r101": ("RTDetrConfig", R101),
    "rtdetrv2-s": ("RTDetrV2Config", {"backbone_config": {**BASIC, "depths": [2, 2, 2, 2]}, **SMALL,
                                      "decoder_layers": 3}),
    "rtdetrv2-m": ("RTDetrV2Config", {"backbone_config": RESNET, "hidden_expansion": 0.5}),
    "rtdetrv2-l": ("RTDetrV2Config", {"backbone_config": RESNET}),
    "rtdetrv2-x": ("RTDetrV2Config", R101),
}  # fmt: skip
# HGNetv2 variants as upstream D-FINE defines them: stem (in, mid, out), then per stage
# (in, mid, out, blocks, downsample, light, kernel, layers).
HGNETV2 = {
    "Atto": ((3, 16, 16), [(16, 16, 64, 1, False, False, 3, 3), (64, 32, 256, 1, True, False, 3, 3),
                           (256, 64, 256, 1, True, True, 3, 3)]),
    "Femto": ((3, 16, 16), [(16, 16, 64, 1, False, False, 3, 3), (64, 32, 256, 1, True, False, 3, 3),
                            (256, 64, 512, 1, True, True, 5, 3)]),
    "Pico": ((3, 16, 16), [(16, 16, 64, 1, False, False, 3, 3), (64, 32, 256, 1, True, False, 3, 3),
                           (256, 64, 512, 2, True, True, 5, 3)]),
    "B0": ((3, 16, 16), [(16, 16, 64, 1, False, False, 3, 3), (64, 32, 256, 1, True, False, 3, 3),
                         (256, 64, 512, 2, True, True, 5, 3), (512, 128, 1024, 1, True, True, 5, 3)]),
    "B2": ((3, 24, 32), [(32, 32, 96, 1, False, False, 3, 4), (96, 64, 384, 1, True, False, 3, 4),
                         (384, 128, 768, 3, True, True, 5, 4), (768, 256, 1536, 1, True, True, 5, 4)]),
    "B4": ((3, 32, 48), [(48, 48, 128, 1, False, False, 3, 6), (128, 96, 512, 1, True, False, 3, 6),
                         (512, 192, 1024, 3, True, True, 5, 6), (1024, 384, 2048, 1, True, True, 5, 6)]),
    "B5": ((3, 32, 64), [(64, 64, 128, 1, False, False, 3, 6), (128, 128, 512, 2, True, False, 3, 6),
                         (512, 256, 1024, 5, True, True, 5, 6), (1024, 512, 2048, 2, True, True, 5, 6)]),
}  # fmt: skip


def hgnetv2(variant: str, lab: bool, out_indices: list[int]) -> dict:
    stem, stages = HGNETV2[variant]
    columns = list(zip(*stages))
    names = ["stage_in_channels", "stage_mid_channels", "stage_out_channels", "stage_num_blocks", "stage_downsample",
             "stage_light_block", "stage_kernel_size", "stage_numb_of_layers"]  # fmt: skip
    return {"model_type": "hgnet_v2", "stem_channels": list(stem), **{n: list(c) for n, c in zip(names, columns)},
            "hidden_sizes": list(columns[2]), "depths": [1] * len(stages), "embedding_size": stem[2],
            "use_learnable_affine_block": lab, "out_indices": out_indices}  # fmt: skip


DFINE = {"encoder_in_channels": [512, 1024, 2048], "decoder_n_points": [3, 6, 3]}
PEER_CONFIGS.update({
    "dfine-n": ("DFineConfig", {"backbone_config": hgnetv2("B0", True, [3, 4]), "encoder_in_channels": [512, 1024],
                                "feat_strides": [16, 32], "num_feature_levels": 2, "encode_proj_layers": [1],
                                "encoder_hidden_dim": 128, "encoder_ffn_dim": 512, "hidden_expansion": 0.34,
                                "depth_mult": 0.5, "d_model": 128, "decoder_in_channels": [128, 128],
                                "decoder_layers": 3, "decoder_ffn_dim": 512, "decoder_n_points": [6, 6]}),
    "dfine-s": ("DFineConfig", {"backbone_config": hgnetv2("B0", True, [2, 3, 4]), **DFINE,
                                "encoder_in_channels": [256, 512, 1024], "hidden_expansion": 0.5, "depth_mult": 0.34,
                                "decoder_layers": 3}),
    "dfine-m": ("DFineConfig", {"backbone_config": hgnetv2("B2", True, [2, 3, 4]), **DFINE,
                                "encoder_in_channels": [384, 768, 1536], "depth_mult": 0.67, "decoder_layers": 4}),
    "dfine-l": ("DFineConfig", {"backbone_config": hgnetv2("B4", False, [2, 3, 4]), **DFINE}),
    "dfine-x": ("DFineConfig", {"backbone_config": hgnetv2("B5", False, [2, 3, 4]), **DFINE, "encoder_hidden_dim": 384,
                                "encoder_ffn_dim": 2048, "decoder_in_channels": [384, 384, 384]}),
})  # fmt: skip

# DEIMv2's sizes as transformers' conversion script configures them (its DINOV3_PRESETS and the official configs).
LITE = {"encoder_type": "lite", "encoder_layers": 0, "hidden_expansion": 0.34, "depth_mult": 0.5,
        "feat_strides": [16, 32], "num_feature_levels": 2, "decoder_n_points": [4, 2], "decoder_layers": 3,
        "share_bbox_head": True, "use_gateway": False, "decoder_activation_function": "silu"}  # fmt: skip
VIT = {"model_type": "dinov3_vit", "num_hidden_layers": 12, "patch_size": 16, "rope_theta": 100.0}
VIT_TINY = {**VIT, "key_bias": False, "apply_layernorm": False, "out_indices": [4, 8, 12]}
VIT_S = {**VIT, "key_bias": True, "apply_layernorm": True, "hidden_size": 384, "num_attention_heads": 6,
         "intermediate_size": 1536, "num_register_tokens": 4, "out_indices": [6, 9, 12]}  # fmt: skip


def deimv2_vit(backbone: dict, adapter: int, hidden: int, encoder_ffn: int, expansion: float, depth: float,
               layers: int, ffn: int) -> tuple[str, dict]:  # fmt: skip
    return ("Deimv2Config", {
        "backbone_config": backbone, "spatial_tuning_adapter_inplanes": adapter, "encoder_in_channels": [hidden] * 3,
        "encoder_hidden_dim": hidden, "encoder_ffn_dim": encoder_ffn, "hidden_expansion": expansion,
        "depth_mult": depth, "encoder_has_trailing_conv": False, "d_model": hidden, "decoder_in_channels": [hidden] * 3,
        "decoder_n_points": [3, 6, 3], "decoder_layers": layers, "decoder_ffn_dim": ffn,
        "decoder_activation_function": "silu"})  # fmt: skip


PEER_CONFIGS.update({
    "deimv2-atto": ("Deimv2Config", {"backbone_config": hgnetv2("Atto", True, [3]), **LITE,
                                     "encoder_in_channels": [256], "encoder_hidden_dim": 64, "d_model": 64,
                                     "decoder_in_channels": [64, 64], "decoder_ffn_dim": 160, "num_queries": 100}),
    "deimv2-femto": ("Deimv2Config", {"backbone_config": hgnetv2("Femto", True, [3]), **LITE,
                                      "encoder_in_channels": [512], "encoder_hidden_dim": 96, "d_model": 96,
                                      "decoder_in_channels": [96, 96], "decoder_ffn_dim": 256, "num_queries": 150}),
    "deimv2-pico": ("Deimv2Config", {"backbone_config": hgnetv2("Pico", True, [3]), **LITE,
                                     "encoder_in_channels": [512], "encoder_hidden_dim": 112, "d_model": 112,
                                     "decoder_in_channels": [112, 112], "decoder_ffn_dim": 320, "num_queries": 200}),
    "deimv2-n": ("Deimv2Config", {"backbone_config": hgnetv2("B0", True, [3, 4]), "encoder_in_channels": [512, 1024],
                                  "feat_strides": [16, 32], "num_feature_levels": 2, "encode_proj_layers": [1],
                                  "encoder_hidden_dim": 128, "encoder_ffn_dim": 512, "hidden_expansion": 0.34,
                                  "depth_mult": 0.5, "d_model": 128, "decoder_in_channels": [128, 128],
                                  "decoder_layers": 3, "decoder_ffn_dim": 512, "decoder_n_points": [6, 6],
                                  "decoder_activation_function": "silu"}),
    "deimv2-s": deimv2_vit({**VIT_TINY, "hidden_size": 192, "num_attention_heads": 3, "intermediate_size": 768},
                           16, 192, 512, 0.34, 0.67, 4, 512),
    "deimv2-m": deimv2_vit({**VIT_TINY, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024},
                           16, 256, 512, 0.67, 1.0, 4, 512),
    "deimv2-l": deimv2_vit(VIT_S, 32, 224, 896, 1.0, 1.0, 4, 1792),
    "deimv2-x": deimv2_vit({**VIT_S, "use_gated_mlp": True, "hidden_act": "silu"}, 64, 256, 1024, 1.25, 1.37, 6, 2048),
})  # fmt: skip

# transformers' D-FINE names -> the official Peterande/D-FINE names (the names transformers' conversion script reads
# from the released files; checked against modules built from the official code). A name ending in <q|k|v> is one
# third of a packed in_proj tensor.
OFFICIAL_DFINE_NAMES = [
    (r"^model\.backbone\.model\.embedder\.(stem\w+)\.", r"backbone.stem.\1."),
    (r"^model\.backbone\.model\.encoder\.stages\.", r"backbone.stages."),
    (r"^model\.encoder_input_proj\.(\d+)\.0\.", r"encoder.input_proj.\1.conv."),
    (r"^model\.encoder_input_proj\.(\d+)\.1\.", r"encoder.input_proj.\1.norm."),
    (r"^model\.encoder\.(?:aifi|encoder)\.0\.layers\.0\.", "encoder.encoder.0.layers.0."),
    (r"^model\.encoder\.downsample_convs\.(\d+)\.conv([12])\.", r"encoder.downsample_convs.\1.0.cv\2."),
    (r"^model\.encoder\.(fpn|pan)_blocks\.(\d+)\.conv1\.", r"encoder.\1_blocks.\2.cv1."),
    (r"^model\.encoder\.(fpn|pan)_blocks\.(\d+)\.csp_rep1\.", r"encoder.\1_blocks.\2.cv2.0."),
    (r"^model\.encoder\.(fpn|pan)_blocks\.(\d+)\.conv2\.", r"encoder.\1_blocks.\2.cv2.1."),
    (r"^model\.encoder\.(fpn|pan)_blocks\.(\d+)\.csp_rep2\.", r"encoder.\1_blocks.\2.cv3.0."),
    (r"^model\.encoder\.(fpn|pan)_blocks\.(\d+)\.conv3\.", r"encoder.\1_blocks.\2.cv3.1."),
    (r"^model\.encoder\.(fpn|pan)_blocks\.(\d+)\.conv4\.", r"encoder.\1_blocks.\2.cv4."),
    (r"^model\.encoder\.", "encoder."),
    (r"^model\.decoder_input_proj\.(\d+)\.0\.", r"decoder.input_proj.\1.conv."),
    (r"^model\.decoder_input_proj\.(\d+)\.1\.", r"decoder.input_proj.\1.norm."),
    (r"^model\.enc_output\.0\.", "decoder.enc_output.proj."),
    (r"^model\.enc_output\.1\.", "decoder.enc_output.norm."),
    (r"^model\.(enc_score_head|enc_bbox_head|denoising_class_embed)\.", r"decoder.\1."),
    (r"^model\.decoder\.class_embed\.", "decoder.dec_score_head."),
    (r"^model\.decoder\.bbox_embed\.", "decoder.dec_bbox_head."),
    (r"^model\.decoder\.(layers|lqe_layers)\.", r"decoder.decoder.\1."),
    (r"^model\.decoder\.", "decoder."),
    (r"\.self_attn\.(o_proj|out_proj)\.", ".self_attn.out_proj."),
    (r"\.self_attn\.([qkv])_proj\.(weight|bias)$", r".self_attn.in_proj_\2<\1>"),
    (r"\.(fc1|mlp\.layers\.0)\.", ".linear1."),
    (r"\.(fc2|mlp\.layers\.1)\.", ".linear2."),
    (r"^(encoder\.encoder\.0\.layers\.0)\.self_attn_layer_norm\.", r"\1.norm1."),
    (r"^(encoder\.encoder\.0\.layers\.0)\.final_layer_norm\.", r"\1.norm2."),
    (r"\.self_attn_layer_norm\.", ".norm1."),
    (r"\.final_layer_norm\.", ".norm3."),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"^(backbone\..*)\.convolution\.", r"\1.conv."),
    (r"^(backbone\..*)\.normalization\.", r"\1.bn."),
]


def renamed_to_official(model, rules, fix=lambda key: key) -> tuple[dict, dict]:
    """A transformers model's tensors under the official names `rules` give (`fix` may adjust a name further, or
    drop the tensor with None) -> (state, packed): packed holds the parts of tensors the official code stores
    packed, by name and part (from the names' "<part>" suffix)."""
    import re

    state, packed = {}, {}
    for key, tensor in model.state_dict().items():
        if re.match(r"(class|bbox)_embed\.", key):  # transformers' top-level aliases of the decoder's heads
            continue
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        key = fix(key)
        match = re.match(r"(.*)<(\w+)>$", key or "")
        if match:
            packed.setdefault(match[1], {})[match[2]] = tensor
        elif key is not None:
            state[key] = tensor
    return state, packed


def official_dfine_checkpoint(path: Path, model) -> Path:
    """A transformers DFineForObjectDetection's weights as Peterande/D-FINE releases them: {"model": state dict}
    with packed attention projections and reg_scale / up stored twice."""
    state, packed = renamed_to_official(model, OFFICIAL_DFINE_NAMES)
    for key, parts in packed.items():
        state[key] = torch.cat([parts["q"], parts["k"], parts["v"]])
    for name in ("reg_scale", "up"):
        state[f"decoder.decoder.{name}"] = state[f"decoder.{name}"]
    torch.save({"model": state}, path)
    return path


# transformers' DEIMv2 names -> the official Intellindust-AI-Lab/DEIMv2 names (the ones transformers' conversion
# script reads; module names of the official code). "<q|k|v>" marks a third of a packed attention projection,
# "<gate|up>" a half of the SwiGLU's packed w12; "!" a tensor the official model does not have; "<vit>", "<vit-up>",
# "<vit-down>": names that differ between the ViT-Tiny, DINOv3-S and DINOv3-S+.
OFFICIAL_DEIMV2_NAMES = [
    (r"^model\.conv_encoder\.model\.embedder\.(stem\w+)\.", r"backbone.stem.\1."),
    (r"^model\.conv_encoder\.model\.encoder\.stages\.", "backbone.stages."),
    (r"^(backbone\.(stem|stages)\..*)\.convolution\.", r"\1.conv."),
    (r"^(backbone\.(stem|stages)\..*)\.normalization\.", r"\1.bn."),
    (r"^model\.conv_encoder\.encoder_input_proj\.", "encoder.input_proj."),
    (r"^model\.conv_encoder\.fusion_proj\.(\d+)\.conv\.", r"backbone.convs.\1."),
    (r"^model\.conv_encoder\.fusion_proj\.(\d+)\.norm\.", r"backbone.norms.\1."),
    (r"^model\.conv_encoder\.spatial_tuning_adapter\.stem_conv\.conv\.", "backbone.sta.stem.0."),
    (r"^model\.conv_encoder\.spatial_tuning_adapter\.stem_conv\.norm\.", "backbone.sta.stem.1."),
    (r"^model\.conv_encoder\.spatial_tuning_adapter\.conv2\.conv\.", "backbone.sta.conv2.0."),
    (r"^model\.conv_encoder\.spatial_tuning_adapter\.conv2\.norm\.", "backbone.sta.conv2.1."),
    (r"^model\.conv_encoder\.spatial_tuning_adapter\.conv([34])\.conv\.", r"backbone.sta.conv\1.1."),
    (r"^model\.conv_encoder\.spatial_tuning_adapter\.conv([34])\.norm\.", r"backbone.sta.conv\1.2."),
    (r"^model\.conv_encoder\.backbone\.embeddings\.patch_embeddings\.", "backbone.dinov3.<vit>patch_embed.proj."),
    (r"^model\.conv_encoder\.backbone\.embeddings\.register_tokens$", "backbone.dinov3.<vit>storage_tokens"),
    (r"^model\.conv_encoder\.backbone\.embeddings\.", "backbone.dinov3.<vit>"),
    (r"^model\.conv_encoder\.backbone\.(model\.)?layer\.", "backbone.dinov3.<vit>blocks."),
    (r"^model\.conv_encoder\.backbone\.norm\.", "backbone.dinov3.<vit>norm."),
    (r"\.attention\.o_proj\.", ".attn.proj."),
    (r"\.attention\.([qkv])_proj\.(weight|bias)$", r".attn.qkv.\2<\1>"),
    (r"\.layer_scale([12])\.lambda1$", r".ls\1.gamma"),
    (r"^(backbone\..*)\.mlp\.gate_proj\.", r"\1.mlp.w1."),
    (r"^(backbone\..*)\.mlp\.up_proj\.", r"\1.mlp.<vit-up>."),
    (r"^(backbone\..*)\.mlp\.down_proj\.", r"\1.mlp.<vit-down>."),
    (r"^model\.encoder\.aifi\.0\.layers\.0\.", "encoder.encoder.0.layers.0."),
    (r"^model\.encoder\.", "encoder."),
    (r"^(encoder\..*)\.self_attn\.o_proj\.", r"\1.self_attn.out_proj."),
    (r"^(encoder\..*)\.self_attn\.([qkv])_proj\.(weight|bias)$", r"\1.self_attn.in_proj_\3<\2>"),
    (r"^(encoder\..*)\.mlp\.layers\.([01])\.", lambda m: f"{m[1]}.linear{int(m[2]) + 1}."),
    (r"^(encoder\.encoder\..*)\.self_attn_layer_norm\.", r"\1.norm1."),
    (r"^(encoder\.encoder\..*)\.final_layer_norm\.", r"\1.norm2."),
    (r"downsample_convs\.(\d+)\.conv([12])\.", r"downsample_convs.\1.0.cv\2."),
    (r"_block(s\.\d+)?\.csp_rep([12])\.conv2\.", lambda m: f"_block{m[1] or ''}.cv{int(m[2]) + 1}.1."),
    (r"_block(s\.\d+)?\.csp_rep([12])\.", lambda m: f"_block{m[1] or ''}.cv{int(m[2]) + 1}.0."),
    (r"_block(s\.\d+)?\.conv1\.", r"_block\1.cv1."),
    (r"_block(s\.\d+)?\.conv2\.", r"_block\1.cv4."),
    (r"^encoder\.down_conv([12])\.conv\.", r"encoder.down_sample\1.1."),
    (r"^encoder\.down_conv([12])\.norm\.", r"encoder.down_sample\1.2."),
    (r"^encoder\.bi_fusion_conv\.", "encoder.bi_fusion.cv."),
    (r"^model\.decoder\.class_embed\.", "decoder.dec_score_head."),
    (r"^model\.decoder\.bbox_embed\.", "decoder.dec_bbox_head."),
    (r"^model\.decoder\.(layers|lqe_layers)\.", r"decoder.decoder.\1."),
    (r"^model\.enc_output\.", "!"),
    (r"^model\.(decoder\.)?", "decoder."),
    (r"^(decoder\..*)\.self_attn\.o_proj\.", r"\1.self_attn.out_proj."),
    (r"^(decoder\..*)\.self_attn\.([qkv])_proj\.(weight|bias)$", r"\1.self_attn.in_proj_\3<\2>"),
    (r"\.self_attn_layer_norm\.weight$", ".norm1.scale"),
    (r"\.encoder_attn_layer_norm\.weight$", ".norm2.scale"),
    (r"\.final_layer_norm\.weight$", ".norm3.scale"),
    (r"\.gateway\.norm\.weight$", ".gateway.norm.scale"),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"^(decoder\..*)\.mlp\.(gate|up)_proj\.(weight|bias)$", r"\1.swish_ffn.w12.\3<\2>"),
    (r"^(decoder\..*)\.mlp\.down_proj\.", r"\1.swish_ffn.w3."),
]


def official_deimv2_checkpoint(path: Path, model) -> Path:
    """A transformers Deimv2ForObjectDetection's weights as the official DEIMv2 solver saves them: {"model": state
    dict} with packed projections, the ViT-Tiny's names (`dinov3._model`) or DINOv3's (`dinov3`, with a key-bias
    mask), reg_scale and up twice, and without what transformers adds (the proposal projection)."""
    import re

    tiny = model.config.backbone_config.model_type == "dinov3_vit" and not model.config.backbone_config.use_gated_mlp \
        and model.config.backbone_config.num_register_tokens == 0  # fmt: skip
    gated = model.config.backbone_config.model_type == "dinov3_vit" and model.config.backbone_config.use_gated_mlp

    def fix(key: str) -> str | None:
        key = key.replace("<vit>", "_model." if tiny else "")
        key = key.replace("<vit-up>", "w2" if gated else "fc1").replace("<vit-down>", "w3" if gated else "fc2")
        if key.startswith("!") or key.endswith("num_batches_tracked"):
            return None  # transformers' proposal projection
        if tiny and re.search(r"\.ls[12]\.gamma$|dinov3\._model\.norm\.", key):
            return None  # the ViT-Tiny has no layer scales (transformers': 1) and no final norm
        return key

    state, packed = renamed_to_official(model, OFFICIAL_DEIMV2_NAMES, fix)
    for key, parts in packed.items():
        if "w12" in key:
            state[key] = torch.cat([parts["gate"], parts["up"]])
            continue
        if "k" not in parts:  # transformers' ViT-Tiny has no key bias: the official one's is zero here
            parts["k"] = torch.zeros_like(parts["q"])
        state[key] = torch.cat([parts["q"], parts["k"], parts["v"]])
        if key.endswith("attn.qkv.bias") and not tiny:  # DINOv3's mask keeps q and v biases, zeroes k's
            state[key.replace("qkv.bias", "qkv.bias_mask")] = torch.cat([torch.ones_like(parts[n]) * (n != "k")
                                                                         for n in "qkv"])  # fmt: skip
    for name in ("reg_scale", "up"):
        state[f"decoder.decoder.{name}"] = state[f"decoder.{name}"]
    torch.save({"model": state}, path)
    return path
