"""detr-toolkit: real-time detection transformers (RT-DETR family) in plain PyTorch."""

import os

from .limits import IMAGE_PIXELS

# OpenCV reads its own pixel limit once, when it is first imported: ours, for the formats whose header only
# OpenCV can read (Radiance HDR, PFM, ...), so that such a file is refused before it is decoded.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(IMAGE_PIXELS.value))

from .model import RTDETR  # (imported after the environment above)
from .results import Boxes, Results

__version__ = "0.1.0"
__all__ = ["RTDETR", "Boxes", "Results", "__version__"]
