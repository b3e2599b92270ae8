"""Query decoders. Each family's decoder is a composition of the shared parts here: `anchors`, `queries`
(two-stage top-k selection), `deformable_attention`, `layer` (the decoder layer), `denoising`; MLP heads come
from `nn.common`."""

from .lwdetr import LWDETRDecoder
from .rtdetr import RTDETRDecoder

DECODERS = {"rtdetr": RTDETRDecoder, "lwdetr": LWDETRDecoder}

__all__ = ["DECODERS", "LWDETRDecoder", "RTDETRDecoder"]
