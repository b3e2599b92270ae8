"""Neural-network modules: backbones, encoder, decoder and the detector that ties them together."""

from .conv import fuse_model
from .detector import Detector, build_model

__all__ = ["Detector", "build_model", "fuse_model"]
