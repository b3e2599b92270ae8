"""Reading a transformers `config.json` and `preprocessor_config.json` into our model config's terms: checked
counts, class names, and the input settings (size, rescale, normalisation) every family shares; then the sections
the RT-DETR family's configs share (`family_config`, the HGNetv2 backbone of D-FINE and DEIMv2)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .. import limits
from ..config import class_names
from ..errors import CheckpointError

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
PIXEL_MAX = 255.0  # our models see RGB in 0..1: 8-bit pixels / 255
DEFAULT_SIZE = 640  # the input size of a folder without a preprocessor config (its families' own)


def block_count(value: Any, name: str, most: int | None = None) -> int:
    """A block count or index of the config: an integer, at most `most` (or the layer limit). Checked before
    anything is sized from it: a config of a few bytes must not make a list of ten billion indices."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"config.json {name}: {value!r} is not a count or index of blocks")
    if most is not None and value > most:
        raise ValueError(f"config.json {name}: {value} is beyond the {most} blocks")
    limits.MODEL_LAYERS.check(value, f"config.json {name}={value}")
    return value


def require(hf: dict[str, Any], name: str, supported: Any) -> None:
    """CheckpointError when the config sets `name` to anything but the `supported` value (its default if absent)."""
    value = hf.get(name, supported)
    if value != supported:
        raise CheckpointError(f"config.json {name}={value!r} is not supported (only {supported!r})")


def names_of(hf: dict[str, Any], default_nc: int) -> tuple[int, dict[int, str]]:
    """(nc, {index: name}) from `id2label` (or `num_labels`, or the family's default count without either)."""
    id2label = hf.get("id2label") or {}
    nc = len(id2label) if isinstance(id2label, dict) and id2label else hf.get("num_labels", default_nc)
    return nc, class_names(id2label, nc, "config.json")


def input_settings(
    preprocessor: dict[str, Any] | None, default_size: int, default_mean: list[float] | None,
    default_std: list[float] | None,
) -> tuple[int, list[float] | None, list[float] | None]:  # fmt: skip
    """(imgsz, mean, std) of our config from an image processor's settings.

    The processor computes (pixels * rescale_factor - image_mean) / image_std (each step when enabled); our models
    take pixels / 255, normalised by (x - mean) / std. So mean = image_mean / (255 r), std = image_std / (255 r);
    None for both when the two agree already (no normalisation and r = 1/255). Without a processor: the defaults.
    """
    if preprocessor is None:
        return default_size, default_mean, default_std
    size = preprocessor.get("size") or {}
    imgsz = size.get("height") or size.get("shortest_edge") or default_size
    if size.get("width", imgsz) != imgsz:
        raise CheckpointError(f"preprocessor_config.json: size {size} is not square; our models take square inputs")
    scale = PIXEL_MAX * (
        preprocessor.get("rescale_factor", 1 / PIXEL_MAX) if preprocessor.get("do_rescale", True) else 1
    )
    scale = 1.0 if math.isclose(scale, 1.0) else scale  # 255 * (1 / 255) as JSON stores it
    if preprocessor.get("do_normalize", True):
        mean = preprocessor.get("image_mean", default_mean or [0.0] * 3)
        std = preprocessor.get("image_std", default_std or [1.0] * 3)
    else:
        mean, std = [0.0] * 3, [1.0] * 3
    mean, std = [m / scale for m in mean], [s / scale for s in std]
    if mean == [0.0] * 3 and std == [1.0] * 3:
        return imgsz, None, None
    return imgsz, mean, std


def rename_tensors(
    tensors: dict[str, torch.Tensor], rename: Callable[[str], str | None], where: str, nc: int
) -> dict[str, torch.Tensor]:
    """An RT-DETR-family model's tensors under our names: `rename` gives a key's new name, None to drop it, or
    raises KeyError for a key it does not know (a CheckpointError naming `where`). The denoising class embedding
    loses the padding-class row transformers adds after the `nc` real ones."""
    state: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        try:
            new = rename(key)
        except KeyError:
            raise CheckpointError(f"{where}: unexpected tensor {key!r}") from None
        if new is not None:
            state[new] = tensor
    embed = state.get("decoder.denoising_class_embed.weight")
    if embed is not None:
        state["decoder.denoising_class_embed.weight"] = embed[:nc]
    return state


# --- the sections the RT-DETR family's configs share (RT-DETR, RT-DETRv2, D-FINE, DEIMv2) ---------------------


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


def hgnetv2_backbone(hf: dict[str, Any]) -> dict[str, Any]:
    """Our HGNetv2 backbone section from a transformers config with an `hgnet_v2` backbone_config."""
    hg = hf.get("backbone_config") or {}
    if hg.get("model_type") != "hgnet_v2" or hf.get("use_timm_backbone"):
        raise CheckpointError(f"config.json: backbone {hg.get('model_type')!r} is not supported (only hgnet_v2)")
    layers = set(hg["stage_numb_of_layers"])
    if len(layers) != 1:
        raise CheckpointError(f"config.json: stage_numb_of_layers {hg['stage_numb_of_layers']} must be equal")
    stages = [
        {"mid": mid, "out": out, "blocks": block_count(blocks, "backbone_config.stage_num_blocks"), "kernel": kernel,
         "light": bool(light), "downsample": bool(down)}
        for mid, out, blocks, kernel, light, down in zip(
            hg["stage_mid_channels"], hg["stage_out_channels"], hg["stage_num_blocks"], hg["stage_kernel_size"],
            hg["stage_light_block"], hg["stage_downsample"])
    ]  # fmt: skip
    # transformers counts the stem as stage 0: its out_indices 2, 3, 4 are our stages 1, 2, 3.
    returned = [block_count(i, "backbone_config.out_indices", len(stages)) - 1 for i in hg["out_indices"]]
    return {
        "type": "hgnetv2",
        "stem": list(hg["stem_channels"][1:]),
        "stages": stages,
        "return_stages": returned,
        "layers_per_block": block_count(layers.pop(), "backbone_config.stage_numb_of_layers"),
        "affine": bool(hg.get("use_learnable_affine_block", False)),
        "freeze_norm": bool(hf.get("freeze_backbone_batch_norms", True)),
    }
