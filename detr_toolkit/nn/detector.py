"""The detector: backbone -> encoder -> decoder, built from a model config (the YAML under `configs/`).

A config is plain data:
    nc: 80                  # number of classes
    names: {0: person, ...} # optional class names
    imgsz: 640              # default inference size
    mean: [0.485, 0.456, 0.406]      # optional input normalisation of 0..1 RGB pixels (RT-DETR: none)
    std: [0.229, 0.224, 0.225]
    backbone: {type: hgnetv2, ...}   # keyword arguments of the backbone class (by type: backbones.BACKBONES), and
                                     # optionally `weights: FILE`, pretrained weights a new model starts from
                                     # (read by weights.backbone, not here)
    encoder:  {type: hybrid, ...}    # keyword arguments of the encoder class (ENCODERS below)
    decoder:  {type: rtdetr, ...}    # keyword arguments of the decoder class (decoders.DECODERS)
    mask_head: {type: rfdetr, ...}   # optional: instance masks (MASK_HEADS below); a segmentation model
    loss:     {class_loss: ...}      # training only: see `detr_toolkit.loss` (not read here)
Channel counts flow from one part to the next; nothing else is implied.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from torch import nn

from .. import limits
from ..errors import ConfigError
from .backbones import BACKBONES
from .decoders import DECODERS
from .encoder import HybridEncoder
from .lite_encoder import LiteEncoder
from .mask_head import MaskHead
from .validation import CONSTRUCTION_ERRORS, check_arguments, check_on_meta, check_values, is_number


class NoEncoder(nn.Module):
    """For backbones whose own neck already fuses scales (the ViT's projector): maps pass through unchanged."""

    def __init__(self, in_channels: list[int], in_strides: list[int]):
        super().__init__()
        self.out_channels, self.out_strides = list(in_channels), list(in_strides)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return features


ENCODERS = {"hybrid": HybridEncoder, "lite": LiteEncoder, "none": NoEncoder}
MASK_HEADS = {"rfdetr": MaskHead}
MODEL_KEYS = {"nc", "names", "imgsz", "mean", "std", "backbone", "encoder", "decoder", "mask_head", "loss"}
DEFAULT_IMGSZ = 640  # the input size of a config without imgsz
# Arguments a part receives from the parts before it, never from its config section.
DERIVED = {"in_channels", "in_strides", "num_classes", "query_dim"}


class Detector(nn.Module):
    """Shapes: images (B, 3, H, W) RGB in 0..1 -> {"boxes": (B, Q, 4) cxcywh in 0..1, "logits": (B, Q, C)}, and
    with a mask head "masks": (B, Q, H / r, W / r) mask logits (r: the head's downsample).

    `mean`/`std` (per RGB channel), when given, normalise the images first; `stride` (the coarsest of the
    backbone's and the encoder's maps) is what input sides must be multiples of.
    """

    def __init__(
        self,
        backbone: nn.Module,
        encoder: nn.Module,
        decoder: nn.Module,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        mask_head: nn.Module | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.encoder = encoder
        self.decoder = decoder
        self.mask_head = mask_head
        self.decoder.return_queries = mask_head is not None
        self.stride: int = max(backbone.stride, *encoder.out_strides)
        normalise = mean is not None or std is not None
        self.register_buffer("mean", torch.tensor(mean or [0.0] * 3).view(1, 3, 1, 1) if normalise else None, False)
        self.register_buffer("std", torch.tensor(std or [1.0] * 3).view(1, 3, 1, 1) if normalise else None, False)

    def check_input_size(self, size: int, name: str = "imgsz", batch: int = 1) -> int:
        """`size` if this model runs it (see `check_input_size`)."""
        return check_input_size(size, self.stride, name, batch)

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None) -> dict[str, torch.Tensor]:
        """`targets` (training only): per image {"boxes": (n, 4) cxcywh in 0..1, "labels": (n,)}, for denoising."""
        if self.mean is not None:
            images = (images - self.mean) / self.std
        features = self.encoder(self.backbone(images))
        outputs = self.decoder(features, targets) if self.training else self.decoder(features)
        if self.mask_head is not None:
            outputs["masks"] = self.mask_head(features, outputs.pop("queries"), images.shape[-2:])
            outputs.pop("dn_queries", None)  # training: masks are learnt from the matched queries only
            outputs.get("one_to_many", {}).pop("queries", None)
        return outputs

    @property
    def task(self) -> str:
        """The task, by ultralytics' names: "segment" with a mask head, else "detect"."""
        return "detect" if self.mask_head is None else "segment"


def check_input_size(size: int, stride: int, name: str = "imgsz", batch: int = 1) -> int:
    """`size` if it is a multiple of `stride` and a batch of `batch` images of `size` x `size` is within
    limits.BATCH_PIXELS; ConfigError or LimitError naming the setting otherwise."""
    if size % stride:
        raise ConfigError(f"{name}={size}: must be a multiple of {stride} for this model")
    limits.BATCH_PIXELS.check(batch * size * size, f"batch={batch} at {name}={size}")
    return size


def _build_part(registry: dict[str, type], section: dict[str, Any] | None, where: str, **derived: Any) -> nn.Module:
    """Instantiate `registry[section['type']]` with the section's keys, checked against its signature first, and
    those of the `derived` values (from the parts before) that it takes."""
    if not isinstance(section, dict) or "type" not in section:
        raise ConfigError(f"{where}: needs a mapping with a 'type' (one of {sorted(registry)})")
    kwargs = dict(section)
    kind = kwargs.pop("type")
    if not isinstance(kind, str) or kind not in registry:
        raise ConfigError(f"{where}: unknown type {kind!r} (known: {sorted(registry)})")
    cls = registry[kind]
    check_arguments(cls, kwargs, f"{where} ({kind})", derived=DERIVED)
    check_values(cls, kwargs, f"{where} ({kind})")
    accepted = inspect.signature(cls).parameters
    try:
        return cls(**kwargs, **{name: value for name, value in derived.items() if name in accepted})
    except CONSTRUCTION_ERRORS as error:
        raise ConfigError(f"{where}: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None


def build_model(config: dict[str, Any]) -> Detector:
    """Build a randomly initialised detector from a model config (see the module docstring).

    The config is checked before anything is allocated (see `validation`): keys and types, value limits, the
    parameter count, and a forward pass of shapes only, so that a malformed or hostile config fails with one
    line naming the problem instead of a traceback or exhausted memory.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"a model config must be a mapping of keys, got {type(config).__name__}")
    unknown = sorted(set(config) - MODEL_KEYS)
    if unknown:
        raise ConfigError(f"unknown model config key(s) {unknown} (known: {sorted(MODEL_KEYS)})")
    if not isinstance(config.get("nc"), int) or isinstance(config["nc"], bool) or config["nc"] < 1:
        raise ConfigError(f"model config needs nc (number of classes) >= 1, got {config.get('nc')!r}")
    for key in ("mean", "std"):
        value = config.get(key)
        if value is not None and not (isinstance(value, list) and len(value) == 3 and all(is_number(v) for v in value)):
            raise ConfigError(f"model config {key} must be a list of 3 numbers (R, G, B), got {value!r}")
    limits.MODEL_CLASSES.check(config["nc"], f"model config nc={config['nc']}")
    if isinstance(config.get("imgsz"), int):
        limits.IMAGE_SIZE.check(config["imgsz"], f"model config imgsz={config['imgsz']}")
    if torch.get_default_device().type != "meta":
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a config that does not fit is reported once, by check_on_meta
            check_on_meta(_build(config), config.get("imgsz", DEFAULT_IMGSZ))
    return _build(config)


def _build(config: dict[str, Any]) -> Detector:
    section = config.get("backbone")
    if isinstance(section, dict) and "weights" in section:
        if not isinstance(section["weights"], str) or not section["weights"]:
            raise ConfigError(f"backbone: weights must name a file, got {section['weights']!r}")
        section = {key: value for key, value in section.items() if key != "weights"}
    backbone = _build_part(BACKBONES, section, "backbone")
    encoder = _build_part(
        ENCODERS, config.get("encoder"), "encoder", in_channels=backbone.out_channels, in_strides=backbone.out_strides
    )
    decoder = _build_part(DECODERS, config.get("decoder"), "decoder", in_channels=encoder.out_channels,
                          in_strides=encoder.out_strides, num_classes=config["nc"])  # fmt: skip
    mask_head = None
    if config.get("mask_head") is not None:
        mask_head = _build_part(MASK_HEADS, config["mask_head"], "mask_head", in_channels=encoder.out_channels,
                                in_strides=encoder.out_strides, query_dim=decoder.hidden_dim)  # fmt: skip
    return Detector(backbone, encoder, decoder, config.get("mean"), config.get("std"), mask_head)
