"""Query decoders. Each family's decoder is a composition of the shared parts here: `anchors`, `queries`
(two-stage top-k selection), `two_stage` (the RT-DETR family's proposals and denoising), `deformable_attention`,
`layer` (the decoder layer), `denoising`, `distribution` (D-FINE's box distributions); MLP heads come from
`nn.common`."""

from .dfine import DFineDecoder
from .lwdetr import LWDETRDecoder
from .rtdetr import RTDETRDecoder

DECODERS = {"rtdetr": RTDETRDecoder, "dfine": DFineDecoder, "lwdetr": LWDETRDecoder}

__all__ = ["DECODERS", "DFineDecoder", "LWDETRDecoder", "RTDETRDecoder"]
