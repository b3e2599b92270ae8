"""Safety limits: what an input file may ask us to allocate, checked before anything is allocated.

A small file can ask for gigabytes: an image header for a 100k x 100k picture, a config for a million layers, a
YAML file whose anchors expand without end. Each limit below is far above what real models and data need, and can
be raised through its environment variable, which the error names:

    DETR_TOOLKIT_MAX_IMAGE_PIXELS=400000000 detect predict huge-aerial.tif
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import LimitError


@dataclass(frozen=True)
class Limit:
    """A named maximum, overridable by the environment variable DETR_TOOLKIT_MAX_<NAME>."""

    name: str
    default: int
    unit: str  # what is counted, plural ("pixels")

    @property
    def variable(self) -> str:
        return f"DETR_TOOLKIT_MAX_{self.name}"

    @property
    def value(self) -> int:
        text = os.environ.get(self.variable)
        if text is None:
            return self.default
        try:
            return int(float(text))
        except ValueError:
            raise LimitError(f"{self.variable}={text!r}: must be a number") from None

    def check(self, amount: int, thing: str) -> None:
        """LimitError naming `thing` when `amount` is above the limit."""
        if amount > self.value:
            raise LimitError(
                f"{thing}: {amount:,} {self.unit}, above the limit of {self.value:,} (set {self.variable} to raise it)"
            )


# PIL's own decompression-bomb threshold (2x Image.MAX_IMAGE_PIXELS): about 13400 x 13400.
IMAGE_PIXELS = Limit("IMAGE_PIXELS", 178_956_970, "pixels")
YAML_NODES = Limit("YAML_NODES", 1_000_000, "YAML nodes, aliases expanded")
YAML_BYTES = Limit("YAML_BYTES", 4 << 20, "bytes")  # configs and data yamls are kilobytes; lists of images go in .txt
MODEL_PARAMETERS = Limit("MODEL_PARAMETERS", 2_000_000_000, "parameters")
# Model config values, by what they count (the parts' constructors annotate their arguments: nn.validation.Count, ...).
MODEL_LAYERS = Limit("MODEL_LAYERS", 1024, "layers, blocks, heads or points")
MODEL_WIDTH = Limit("MODEL_WIDTH", 65_536, "channels")
MODEL_QUERIES = Limit("MODEL_QUERIES", 10_000, "queries")
MODEL_CLASSES = Limit("MODEL_CLASSES", 100_000, "classes")
# A model input side (imgsz, eval_size): 4096 px already needs gigabytes of activations; slice larger images (SAHI).
IMAGE_SIZE = Limit("IMAGE_SIZE", 4096, "pixels a side")
# Pixels of one forward pass's batch (batch x imgsz^2): 8 images at the largest imgsz; the activations are ~100x.
BATCH_PIXELS = Limit("BATCH_PIXELS", 8 * 4096**2, "pixels in a batch")
# Downloads: official weights are up to a few hundred MB; an image or video by URL is far smaller.
DOWNLOAD_BYTES = Limit("DOWNLOAD_BYTES", 4 << 30, "bytes")
SOURCE_BYTES = Limit("SOURCE_BYTES", 256 << 20, "bytes")
# A checkpoint archive entry may expand this many times over its compressed size (torch stores them uncompressed).
CHECKPOINT_EXPANSION = Limit("CHECKPOINT_EXPANSION", 20, "times its compressed size")
