"""Neural-network modules: backbones, encoder, decoder and the detector that ties them together."""

from .conv import fuse_model
from .detector import DEFAULT_IMGSZ, Detector, build_model, check_input_size

__all__ = ["DEFAULT_IMGSZ", "Detector", "build_model", "check_input_size", "fuse_model"]
