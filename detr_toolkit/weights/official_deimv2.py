"""Import of the official DEIMv2 checkpoints (Intellindust-AI-Lab/DEIMv2): the training solver's pickled dicts
(`{"model": ...}` / `{"ema": {"module": ...}}`, read through the restricted unpickler) and the safetensors files of
its HuggingFace repositories (`Intellindust/DEIMv2_*`), both holding the state dict of the official `DEIM` model.

The files hold no config: the shipped config (deimv2-atto ... deimv2-x, which build the official model) whose tensor
shapes the file has is used, with the file's class count. Renamed on the way: packed attention projections
(`qkv`, `in_proj`) and the SwiGLU's packed `w12` are split, DINOv3's masked key bias is applied, the RMSNorms'
`scale` becomes `weight`, the ViT + adapter's fusion convs become the encoder's input projections.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from .mapping import Rule, apply_rules, shipped_size, solver_state, unpack_in_proj
from .official_dfine import RULES as DFINE_RULES

SIZES = tuple(f"deimv2-{size}" for size in ("atto", "femto", "pico", "n", "s", "m", "l", "x"))
_VIT: list[Rule] = [
    (r"^backbone\.dinov3\.(_model\.)?patch_embed\.proj\.", "backbone.patch_embed."),
    (r"^backbone\.dinov3\.(_model\.)?storage_tokens$", "backbone.register_tokens"),
    (r"^backbone\.dinov3\.(_model\.)?", "backbone."),
    (r"\.attn\.proj\.", ".attn.out_proj."),
    (r"\.mlp\.w1\.", ".mlp.gate."),
    (r"\.mlp\.w2\.", ".mlp.up."),
    (r"\.mlp\.w3\.", ".mlp.down."),
    (r"^backbone\.sta\.stem\.0\.", "backbone.adapter.stem.conv."),
    (r"^backbone\.sta\.stem\.1\.", "backbone.adapter.stem.norm."),
    (r"^backbone\.sta\.conv2\.0\.", "backbone.adapter.conv8.conv."),
    (r"^backbone\.sta\.conv2\.1\.", "backbone.adapter.conv8.norm."),
    (r"^backbone\.sta\.conv([34])\.1\.", lambda m: f"backbone.adapter.conv{8 * 2 ** (int(m[1]) - 2)}.conv."),
    (r"^backbone\.sta\.conv([34])\.2\.", lambda m: f"backbone.adapter.conv{8 * 2 ** (int(m[1]) - 2)}.norm."),
    (r"^backbone\.convs\.(\d+)\.", r"encoder.input_proj.\1.conv."),
    (r"^backbone\.norms\.(\d+)\.", r"encoder.input_proj.\1.norm."),
]
_ENCODER: list[Rule] = [
    (r"_block(s\.\d+)?\.cv1\.", r"_block\1.split."),
    (r"_block(s\.\d+)?\.cv([23])\.0\.conv1\.", lambda m: f"_block{m[1] or ''}.branch{int(m[2]) - 1}.split."),
    (r"_block(s\.\d+)?\.cv([23])\.0\.bottlenecks\.(\d+)\.conv1\.",
     lambda m: f"_block{m[1] or ''}.branch{int(m[2]) - 1}.blocks.{m[3]}.conv3x3."),
    (r"_block(s\.\d+)?\.cv([23])\.0\.bottlenecks\.(\d+)\.conv2\.",
     lambda m: f"_block{m[1] or ''}.branch{int(m[2]) - 1}.blocks.{m[3]}.conv1x1."),
    (r"_block(s\.\d+)?\.cv([23])\.1\.", lambda m: f"_block{m[1] or ''}.branch{int(m[2]) - 1}.merge."),
    (r"_block(s\.\d+)?\.cv4\.", r"_block\1.merge."),
    (r"^encoder\.down_sample([12])\.1\.", r"encoder.down\1.conv."),
    (r"^encoder\.down_sample([12])\.2\.", r"encoder.down\1.norm."),
    (r"^encoder\.bi_fusion\.cv\.", "encoder.global_fusion."),
]  # fmt: skip
_DECODER: list[Rule] = [
    (r"\.(norm[123]|gateway\.norm)\.scale$", r".\1.weight"),
    (r"\.swish_ffn\.w3\.", ".swiglu.down."),
]
# What the official model stores that ours computes or keeps in its config.
_DROPPED = re.compile(r"^decoder\.(anchors|valid_mask)$|\.num_points_scale$|^decoder\.(decoder\.)?(reg_scale|up)$"
                      r"|rope_embed\.periods$|\.mask_token$|\.bias_mask$")  # fmt: skip


def official_state(checkpoint: Any) -> dict[str, torch.Tensor] | None:
    """The state dict of an official DEIMv2 checkpoint (its EMA when it has one), else None. A model saved inside
    a wrapper (every name under `model.`) is unwrapped."""
    state = solver_state(checkpoint)
    if state is None:
        return None
    if "model.decoder.decoder.layers.0.swish_ffn.w12.weight" in state:
        state = {k.removeprefix("model."): v for k, v in state.items()}
    return state if "decoder.decoder.layers.0.swish_ffn.w12.weight" in state else None


def _split(key: str, tensor: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Packed tensors -> ours: a ViT's `qkv` (its bias times DINOv3's `bias_mask`, which zeroes the key bias), the
    SwiGLU's `w12` (gate, up)."""
    name, _, kind = key.rpartition(".")
    if name.endswith(".attn.qkv"):
        if kind == "bias" and mask is not None:
            tensor = tensor * mask.to(tensor.dtype)
        base = name.removesuffix("qkv")
        return {f"{base}{p}_proj.{kind}": part for p, part in zip("qkv", tensor.chunk(3))}
    if name.endswith(".swish_ffn.w12"):
        base = name.removesuffix("swish_ffn.w12")
        gate, up = tensor.chunk(2)
        return {f"{base}swiglu.gate.{kind}": gate, f"{base}swiglu.up.{kind}": up}
    return unpack_in_proj(key, tensor)


def _rename(key: str) -> str:
    if key.startswith(("backbone.dinov3.", "backbone.sta.", "backbone.convs.", "backbone.norms.")):
        return apply_rules(key, _VIT)
    if key.startswith("encoder."):
        return apply_rules(apply_rules(key, _ENCODER), DFINE_RULES)
    return apply_rules(apply_rules(key, DFINE_RULES), _DECODER)


def convert(checkpoint: dict[str, Any], path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """-> (our model config with names, our state dict)."""
    official = official_state(checkpoint)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in official.items():
        if not _DROPPED.search(key):
            state.update(_split(_rename(key), tensor, official.get(f"{key}_mask")))  # qkv.bias -> qkv.bias_mask
    nc = state["decoder.dec_score_head.0.weight"].shape[0]
    state["decoder.denoising_class_embed.weight"] = state["decoder.denoising_class_embed.weight"][:nc]  # padding row
    settings = {}
    for name in ("reg_scale", "up"):  # stored twice; safetensors keep one of the names
        value = official.get(f"decoder.decoder.{name}", official.get(f"decoder.{name}"))
        if value is None:
            raise CheckpointError(f"{path}: an official DEIMv2 checkpoint without decoder.{name}")
        settings[name] = float(value.reshape(-1)[0])
    return shipped_size("DEIMv2", SIZES, state, path, settings, _fit)


def _fit(config: dict[str, Any], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors as `config`'s model holds them: one shared box head (stored under every layer's index, or, as
    safetensors keep one name of shared tensors, under any one), the ViT-Tiny's empty register tokens."""
    heads = [int(m[1]) for k in state if (m := re.match(r"decoder\.dec_bbox_head\.(\d+)\.", k))]
    if config["decoder"]["share_bbox_head"] and heads:
        first = min(heads)
        head = {re.sub(r"^decoder\.dec_bbox_head\.\d+\.", "decoder.dec_bbox_head.0.", k): v for k, v in state.items()
                if k.startswith(f"decoder.dec_bbox_head.{first}.")}  # fmt: skip
        state = {**{k: v for k, v in state.items() if not k.startswith("decoder.dec_bbox_head.")}, **head}
    if config["backbone"]["type"] == "dinov3" and "backbone.register_tokens" not in state:
        state = {**state, "backbone.register_tokens": torch.zeros(1, 0, config["backbone"]["dim"])}
    return state
