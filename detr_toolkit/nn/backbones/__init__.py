"""Image backbones: each returns a list of feature maps (fine to coarse) and exposes `out_channels`."""

from .hgnetv2 import HGNetv2

BACKBONES = {"hgnetv2": HGNetv2}

__all__ = ["BACKBONES", "HGNetv2"]
