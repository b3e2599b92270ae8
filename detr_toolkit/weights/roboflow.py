"""Import of roboflow rf-detr checkpoints (`rf-detr-base.pth`, `rf-detr-seg-*.pth` ...): `{"model": state dict,
"args": Namespace}`.

The tensors use the same names as transformers' RF-DETR `save_pretrained` files, so the renaming is
`hf_lwdetr.rename`; the training arguments are translated to a transformers-style config first.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .. import limits
from ..errors import CheckpointError
from . import hf_lwdetr

ENCODERS = ("dinov2_windowed_small", "dinov2_windowed_base")
HEAD_DIM = 64  # DINOv2's attention heads are 64 wide at every size
BLOCK_KEY = re.compile(r"^backbone\.0\.encoder\.encoder\.encoder\.layer\.(\d+)\.")
C2F_BLOCK_KEY = re.compile(r"^backbone\.0\.projector\.stages\.0\.0\.m\.(\d+)\.")


def is_rfdetr_checkpoint(checkpoint: Any) -> bool:
    """True for the dict rf-detr saves: {"model": state dict, "args": its training arguments (a Namespace)}."""
    if not isinstance(checkpoint, dict):
        return False
    args = checkpoint.get("args")
    return isinstance(checkpoint.get("model"), dict) and hasattr(args, "encoder") and hasattr(args, "dec_layers")


def convert(checkpoint: dict[str, Any], path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """-> (our model config with names, our state dict)."""
    args = vars(checkpoint["args"])
    state = checkpoint["model"]
    if args["encoder"] not in ENCODERS:
        raise CheckpointError(f"{path}: rf-detr encoder {args['encoder']!r} not supported ({', '.join(ENCODERS)})")
    if list(args.get("projector_scale", ["P4"])) != ["P4"]:
        raise CheckpointError(f"{path}: rf-detr projector {args['projector_scale']} not supported yet (only P4)")
    try:  # sizes the args do not give are read from the tensors: ViT width and depth, C2f depth
        width = state["backbone.0.encoder.encoder.embeddings.cls_token"].shape[-1]
    except KeyError:
        raise CheckpointError(f"{path}: rf-detr checkpoint without its DINOv2 backbone tensors") from None
    depth = 1 + max(int(m[1]) for key in state if (m := BLOCK_KEY.match(key)))
    c2f_blocks = 1 + max(int(m[1]) for key in state if (m := C2F_BLOCK_KEY.match(key)))
    num_labels = state["class_embed.weight"].shape[0]
    limits.MODEL_CLASSES.check(num_labels, f"{path}: class_embed.weight")
    names = args.get("class_names") or [str(i) for i in range(num_labels)]
    hf_style = {
        "model_type": "rf_detr",
        "backbone_config": {
            "hidden_size": width,
            "num_attention_heads": width // HEAD_DIM,
            "num_hidden_layers": depth,
            "patch_size": args["patch_size"],
            "image_size": args["positional_encoding_size"] * args["patch_size"],
            "num_windows": args["num_windows"],
            "out_indices": list(args["out_feature_indexes"]),
        },
        "d_model": args["hidden_dim"],
        "c2f_num_blocks": c2f_blocks,
        "decoder_layers": args["dec_layers"],
        "decoder_self_attention_heads": args["sa_nheads"],
        "decoder_cross_attention_heads": args["ca_nheads"],
        "decoder_n_points": args["dec_n_points"],
        "decoder_ffn_dim": args.get("dim_feedforward", 2048),
        "num_queries": args["num_queries"],
        "group_detr": args.get("group_detr", 13),
        "id2label": {i: names[i] if i < len(names) else str(i) for i in range(num_labels)},
    }
    if args.get("segmentation_head"):
        try:
            ffn_dim = state["segmentation_head.query_features_block.layers.0.weight"].shape[0]
        except KeyError:
            raise CheckpointError(f"{path}: rf-detr segmentation checkpoint without its segmentation head") from None
        hf_style.update(architectures=["RfDetrForInstanceSegmentation"], intermediate_size=ffn_dim,
                        mask_downsample_ratio=args.get("mask_downsample_ratio", 4),
                        mask_class_loss_coefficient=args.get("mask_ce_loss_coef", 5.0),
                        mask_dice_loss_coefficient=args.get("mask_dice_loss_coef", 5.0),
                        mask_point_sample_ratio=args.get("mask_point_sample_ratio", 16))  # fmt: skip
    config = hf_lwdetr.convert_config(hf_style, {"size": {"height": args["resolution"]}})
    return config, hf_lwdetr.convert_state(state, f"{path} (rf-detr)")
