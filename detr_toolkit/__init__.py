"""detr-toolkit: real-time detection transformers (RT-DETR family) in plain PyTorch."""

from .model import RTDETR
from .results import Boxes, Results

__version__ = "0.1.0"
__all__ = ["RTDETR", "Boxes", "Results", "__version__"]
