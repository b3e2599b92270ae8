"""Image backbones: each returns a list of feature maps (fine to coarse) and exposes `out_channels` and
`out_strides` (per map), and `stride`: what input sides must be multiples of."""

from .dinov3 import DINOv3
from .hgnetv2 import HGNetv2
from .resnet import ResNetVD
from .vit import ViT

BACKBONES = {"dinov3": DINOv3, "hgnetv2": HGNetv2, "resnet_vd": ResNetVD, "vit": ViT}

__all__ = ["BACKBONES", "DINOv3", "HGNetv2", "ResNetVD", "ViT"]
