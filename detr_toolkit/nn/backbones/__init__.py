"""Image backbones: each returns a list of feature maps (fine to coarse) and exposes `out_channels` and
`out_strides` (per map), and `stride`: what input sides must be multiples of."""

from .hgnetv2 import HGNetv2
from .resnet import ResNetVD
from .vit import ViT

BACKBONES = {"hgnetv2": HGNetv2, "resnet_vd": ResNetVD, "vit": ViT}

__all__ = ["BACKBONES", "HGNetv2", "ResNetVD", "ViT"]
