"""ImageNet-pretrained backbones for new detectors, as the official recipes start them: a model config names the
file (`backbone: {weights: FILE, ...}`) and a model made from that config (to train, not one loaded from a
checkpoint) starts with it in its backbone.

The file's format is told by its tensor names:
- ResNet-vd: timm's resnet18d / 34d / 50d / 101d (`conv1.0.weight`, `layer1.0.conv1.weight`, ...), or RT-DETR's
  PaddlePaddle conversions (ResNet18_vd_pretrained_from_paddle.pth, ...: `conv1.conv1_1.conv.weight`,
  `res_layers.0.blocks.0.branch2a.conv.weight`, ...). timm's basic-block nets (18d, 34d) pass the first stage's
  first block through unchanged where RT-DETR's project it with a 1x1 conv: that conv is set to the identity.
- HGNetv2: timm's hgnetv2_b0 ... b6 and D-FINE's PaddlePaddle conversions (PPHGNetV2_B0_stage1.pth, ...), which
  timm's names follow (`stem.stem1.conv.weight`, `stages.0.blocks.0.layers.0.conv.weight`, ...).
- ViTs: a transformers `save_pretrained` folder of DINOv2 (with or without registers; for the `vit` backbone of
  RF-DETR) or DINOv3 (for the `dinov3` backbone of DEIMv2). The parts the ViT has no weights for (the `vit`
  projector, the `dinov3` spatial tuning adapter) keep their fresh ones; the folder's config.json must agree with
  the model config on what no tensor shape tells (heads, gated MLP, rotary base).
Files are safetensors or torch pickles (a state dict, or one under "model" / "state_dict"; read through the
restricted unpickler). A classifier head (timm's `fc`, `head`) is dropped; every other tensor must fit the
backbone the config describes, or one CheckpointError names the missing, unexpected and misshapen tensors.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from . import hf_deimv2, hf_lwdetr, official_dfine, official_rtdetr
from .hub import resolve_weights
from .huggingface import is_hf_folder, read_json, read_tensors
from .mapping import Rule, apply_rules
from .native import read_safetensors
from .safe_pickle import load_foreign_checkpoint

TIMM_RESNET: list[Rule] = [
    (r"^conv1\.0\.", "stem.0.conv."),  # the deep stem: conv, norm, act, conv, norm, act, conv; its last norm: bn1
    (r"^conv1\.1\.", "stem.0.norm."),
    (r"^conv1\.3\.", "stem.1.conv."),
    (r"^conv1\.4\.", "stem.1.norm."),
    (r"^conv1\.6\.", "stem.2.conv."),
    (r"^bn1\.", "stem.2.norm."),
    (r"^layer(\d)\.", lambda m: f"stages.{int(m[1]) - 1}."),
    (r"\.conv(\d)\.", lambda m: f".convs.{int(m[1]) - 1}.conv."),
    (r"\.bn(\d)\.", lambda m: f".convs.{int(m[1]) - 1}.norm."),
    (r"\.downsample\.1\.", ".shortcut.proj.conv."),  # downsample.0: the average pool (Identity where stride 1)
    (r"\.downsample\.2\.", ".shortcut.proj.norm."),
]
CLASSIFIER = re.compile(r"^(fc|head|last_conv)\.")  # timm's ImageNet heads
FORMATS = {  # what the file's tensor names say it holds -> the backbone type it fits
    "timm ResNet-d": "resnet_vd",
    "RT-DETR ResNet-vd": "resnet_vd",
    "HGNetv2": "hgnetv2",
}
HF_MODEL_TYPES = {"dinov2": "vit", "dinov2_with_registers": "vit", "dinov3_vit": "dinov3"}  # config.json's -> ours
FRESH_PARTS = {"vit": "projector.", "dinov3": "adapter."}  # what a pretrained ViT has no weights for


def file_format(state: dict[str, torch.Tensor]) -> str:
    """Which of FORMATS a backbone state dict is in; CheckpointError for any other (naming what it looks like)."""
    if "conv1.conv1_1.conv.weight" in state and any(key.startswith("res_layers.") for key in state):
        return "RT-DETR ResNet-vd"
    if "conv1.0.weight" in state and "layer1.0.conv1.weight" in state:
        return "timm ResNet-d"
    if "stem.stem1.conv.weight" in state:
        return "HGNetv2"
    if "conv1.weight" in state and "layer1.0.conv1.weight" in state:
        raise CheckpointError("a ResNet with a single 7x7 stem conv (torchvision's or timm's resnet50): ResNet-vd "
                              "needs the deep stem of timm's resnet50d or RT-DETR's ResNet50_vd_* files")  # fmt: skip
    raise CheckpointError(f"not a backbone we read (timm ResNet-d or HGNetv2, RT-DETR's or D-FINE's ImageNet files); "
                          f"its first tensors: {', '.join(list(state)[:3])}")  # fmt: skip


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a backbone file: safetensors, or a torch pickle of a state dict (bare or under "model" or
    "state_dict")."""
    if path.suffix == ".safetensors":
        return read_safetensors(path)[1]
    checkpoint: Any = load_foreign_checkpoint(path)
    for key in ("model", "state_dict"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors (a backbone's weights)")
    return {str(key).removeprefix("module."): value for key, value in checkpoint.items()}


def convert(state: dict[str, torch.Tensor], kind: str, backbone: nn.Module) -> dict[str, torch.Tensor]:
    """`state` (in `kind`, see FORMATS) renamed to our `backbone`'s tensors; classifier heads dropped, batch-norm
    counters kept only where ours has them (frozen norms have none)."""
    own = backbone.state_dict()
    rules = {"timm ResNet-d": TIMM_RESNET, "RT-DETR ResNet-vd": official_rtdetr.RULES,
             "HGNetv2": official_dfine.RULES}[kind]  # fmt: skip
    prefix = "" if kind == "timm ResNet-d" else "backbone."  # the official rules rename a whole detector's keys
    converted = {}
    for key, tensor in state.items():
        if CLASSIFIER.match(key):
            continue
        ours = apply_rules(prefix + key, rules).removeprefix(prefix)
        if not (ours.endswith("num_batches_tracked") and ours not in own):
            converted[ours] = tensor
    if kind == "timm ResNet-d":
        converted.update(_identity_projection(converted, backbone))
    return converted


def _identity_projection(converted: dict[str, torch.Tensor], backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The first block's 1x1 shortcut conv and norm as the identity, where our backbone has them and timm's (basic
    blocks as wide in as out) has none: conv weight I; norm y = (x - 0) / sqrt(running_var + eps) with
    running_var = 1 - eps."""
    conv = "stages.0.0.shortcut.proj.conv"
    own = backbone.state_dict()
    if f"{conv}.weight" not in own or f"{conv}.weight" in converted:
        return {}
    channels, inputs = own[f"{conv}.weight"].shape[:2]
    if channels != inputs:
        return {}
    norm = "stages.0.0.shortcut.proj.norm"
    eps = backbone.get_submodule(norm).eps
    return {
        f"{conv}.weight": torch.eye(channels).reshape(channels, channels, 1, 1),
        f"{norm}.weight": torch.ones(channels),
        f"{norm}.bias": torch.zeros(channels),
        f"{norm}.running_mean": torch.zeros(channels),
        f"{norm}.running_var": torch.full((channels,), 1.0 - eps),
    }


def load_pretrained_backbone(model: nn.Module, config: dict[str, Any]) -> None:
    """Load the pretrained backbone weights the model config names (`backbone: {weights: ...}`), if it names any,
    into `model` (a Detector just built from `config`)."""
    section = config.get("backbone")
    if isinstance(section, dict) and section.get("weights"):
        load_backbone_weights(model.backbone, section)


def load_backbone_weights(backbone: nn.Module, section: dict[str, Any]) -> None:
    """Load the pretrained weights `section["weights"]` (a file, a name of hub.OFFICIAL_WEIGHTS, or a transformers
    folder) into `backbone`, built from the model config's backbone `section`; CheckpointError naming the file for
    anything that does not fit."""
    from . import load_state

    weights, backbone_type = section["weights"], section["type"]
    if is_hf_folder(Path(weights)):
        state = _vit_state(Path(weights), section, backbone)
        load_state(backbone, state, f"{weights} (backbone weights)")
        return
    path = resolve_weights(weights)
    try:
        state = read_state(path)
        kind = file_format(state)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}" if str(path) not in str(error) else str(error)) from None
    if FORMATS[kind] != backbone_type:
        raise CheckpointError(f"{path}: holds a {kind} backbone; the model config's backbone is {backbone_type}")
    load_state(backbone, convert(state, kind, backbone), f"{path} (backbone weights)")


def _vit_state(folder: Path, section: dict[str, Any], backbone: nn.Module) -> dict[str, torch.Tensor]:
    """A transformers DINOv2 / DINOv3 folder's tensors under our names, with our fresh FRESH_PARTS added."""
    hf = read_json(folder / "config.json", "model settings")
    model_type = hf.get("model_type")
    if HF_MODEL_TYPES.get(model_type) != section["type"]:
        readable = [name for name, ours in HF_MODEL_TYPES.items() if ours == section["type"]]
        raise CheckpointError(f"{folder}: a transformers {model_type} folder; a {section['type']} backbone reads "
                              f"{' or '.join(readable) or 'no'} folders")  # fmt: skip
    agreements = [("num_attention_heads", "num_heads")]
    if section["type"] == "dinov3":
        agreements += [("use_gated_mlp", "gated_mlp"), ("rope_theta", "rope_theta")]
    elif hf.get("use_swiglu_ffn"):
        raise CheckpointError(f"{folder}: a DINOv2 with a SwiGLU MLP (the giant size) is not supported yet")
    defaults = inspect.signature(type(backbone)).parameters
    for theirs, ours in agreements:
        value = section.get(ours, defaults[ours].default)
        if hf.get(theirs) != value:
            raise CheckpointError(f"{folder}: config.json has {theirs}={hf.get(theirs)!r}; the model config's "
                                  f"backbone has {ours}={value!r}")  # fmt: skip
    if section["type"] == "vit":
        prefix, rename = "backbone.0.encoder.encoder.", hf_lwdetr.rename  # where RF-DETR keeps its DINOv2
    else:
        prefix, rename = "model.conv_encoder.backbone.", hf_deimv2.renamer({"backbone": section, "decoder": {}})
    state = {}
    for key, tensor in read_tensors(folder).items():
        key = re.sub(r"^(dinov2|dinov3|model)\.(?=(embeddings|encoder|layer|layernorm|norm)\b)", "", key)
        if key.startswith("classifier."):
            continue
        try:
            ours = rename(prefix + key)
        except KeyError:
            raise CheckpointError(f"{folder}: unexpected tensor {key!r}") from None
        if ours is not None:
            state[ours.removeprefix("backbone.")] = tensor
    fresh = FRESH_PARTS[section["type"]]
    return state | {key: value for key, value in backbone.state_dict().items() if key.startswith(fresh)}
