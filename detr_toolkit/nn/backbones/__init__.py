"""Image backbones: each returns a list of feature maps (fine to coarse) and exposes `out_channels`."""

from .hgnetv2 import HGNetv2
from .vit import ViT

BACKBONES = {"hgnetv2": HGNetv2, "vit": ViT}

__all__ = ["BACKBONES", "HGNetv2", "ViT"]
