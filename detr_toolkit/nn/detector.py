"""The detector: backbone -> encoder -> decoder, built from a model config (the YAML under `configs/`).

A config is plain data:
    nc: 80                  # number of classes
    names: {0: person, ...} # optional class names
    imgsz: 640              # default inference size
    mean: [0.485, 0.456, 0.406]      # optional input normalisation of 0..1 RGB pixels (RT-DETR: none)
    std: [0.229, 0.224, 0.225]
    backbone: {type: hgnetv2, ...}   # keyword arguments of the backbone class (hgnetv2, vit)
    encoder:  {type: hybrid, ...}    # keyword arguments of the encoder class (hybrid, none)
    decoder:  {type: rtdetr, ...}    # keyword arguments of the decoder class (rtdetr, lwdetr)
Channel counts flow from one part to the next; nothing else is implied.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .backbones import BACKBONES
from .decoder import RTDETRDecoder
from .encoder import HybridEncoder
from .lwdetr_decoder import LWDETRDecoder


class NoEncoder(nn.Module):
    """For backbones whose own neck already fuses scales (the ViT's projector): maps pass through unchanged."""

    def __init__(self, in_channels: list[int]):
        super().__init__()
        self.out_channels = list(in_channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return features


ENCODERS = {"hybrid": HybridEncoder, "none": NoEncoder}
DECODERS = {"rtdetr": RTDETRDecoder, "lwdetr": LWDETRDecoder}
MODEL_KEYS = {"nc", "names", "imgsz", "mean", "std", "backbone", "encoder", "decoder"}
# Arguments a part receives from the parts before it, never from its config section.
DERIVED = {"in_channels", "num_classes"}


class Detector(nn.Module):
    """Shapes: images (B, 3, H, W) RGB in 0..1 -> {"boxes": (B, Q, 4) cxcywh in 0..1, "logits": (B, Q, C)}.

    `mean`/`std` (per RGB channel), when given, normalise the images first; `stride` is what input sides
    must be multiples of.
    """

    def __init__(
        self,
        backbone: nn.Module,
        encoder: nn.Module,
        decoder: nn.Module,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.encoder = encoder
        self.decoder = decoder
        self.stride: int = getattr(backbone, "stride", 32)
        normalise = mean is not None or std is not None
        self.register_buffer("mean", torch.tensor(mean or [0.0] * 3).view(1, 3, 1, 1) if normalise else None, False)
        self.register_buffer("std", torch.tensor(std or [1.0] * 3).view(1, 3, 1, 1) if normalise else None, False)

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None) -> dict[str, torch.Tensor]:
        """`targets` (training only): per image {"boxes": (n, 4) cxcywh in 0..1, "labels": (n,)}, for denoising."""
        if self.mean is not None:
            images = (images - self.mean) / self.std
        features = self.encoder(self.backbone(images))
        return self.decoder(features, targets) if self.training else self.decoder(features)


def _build_part(registry: dict[str, type], section: dict[str, Any] | None, where: str, **derived: Any) -> nn.Module:
    """Instantiate `registry[section['type']]` with the section's keys, refusing keys it does not take."""
    if not isinstance(section, dict) or "type" not in section:
        raise ConfigError(f"{where}: needs a mapping with a 'type' (one of {sorted(registry)})")
    kwargs = dict(section)
    kind = kwargs.pop("type")
    if kind not in registry:
        raise ConfigError(f"{where}: unknown type {kind!r} (known: {sorted(registry)})")
    cls = registry[kind]
    accepted = set(inspect.signature(cls).parameters) - DERIVED
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {kind} (known: {sorted(accepted)})")
    try:
        return cls(**kwargs, **derived)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None


def build_model(config: dict[str, Any]) -> Detector:
    """Build a randomly initialised detector from a model config (see the module docstring)."""
    unknown = sorted(set(config) - MODEL_KEYS)
    if unknown:
        raise ConfigError(f"unknown model config key(s) {unknown} (known: {sorted(MODEL_KEYS)})")
    if not isinstance(config.get("nc"), int) or config["nc"] < 1:
        raise ConfigError(f"model config needs nc (number of classes) >= 1, got {config.get('nc')!r}")
    backbone = _build_part(BACKBONES, config.get("backbone"), "backbone")
    encoder = _build_part(ENCODERS, config.get("encoder"), "encoder", in_channels=backbone.out_channels)
    decoder = _build_part(
        DECODERS, config.get("decoder"), "decoder", in_channels=encoder.out_channels, num_classes=config["nc"]
    )
    for key in ("mean", "std"):
        value = config.get(key)
        if value is not None and (not isinstance(value, list) or len(value) != 3):
            raise ConfigError(f"model config {key} must be a list of 3 numbers (R, G, B), got {value!r}")
    return Detector(backbone, encoder, decoder, config.get("mean"), config.get("std"))
