"""Export: a detector -> an ONNX graph that onnxruntime (or TensorRT, OpenVINO, ...) runs without PyTorch.

The graph has ultralytics' RT-DETR export layout, so that code written for theirs reads ours:

    images (B, 3, H, W) float32 RGB in 0..1  ->  output0 (B, Q, 4 + C): cx, cy, w, h in 0..1, then C class scores
    (sigmoid), one row per decoder query

and the same metadata (names, imgsz, stride, batch, ...) in the file's metadata_props. H and W are fixed at
export (position embeddings and proposal anchors are laid out for them); the batch may be left dynamic.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import DetrToolkitError
from ..files import check_writable, write_file
from ..nn import Detector, fuse_model


class ExportOutputs(nn.Module):
    """The detector with its outputs in the export layout. Shapes: (B, 3, H, W) -> (B, Q, 4 + C)."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        outputs = self.detector(images)
        return torch.cat([outputs["boxes"], outputs["logits"].sigmoid()], dim=-1)


def export_onnx(
    detector: Detector,
    metadata: dict[str, str],
    file: str | Path,
    imgsz: int,
    batch: int,
    dynamic: bool,
    opset: int,
) -> Path:
    """Write `detector` (fused, float32, CPU) as ONNX to `file`, atomically; -> the file's path.

    metadata: string key/values stored in the file (class names, input size, ...).
    dynamic: leave the batch dimension free (the graph then runs any batch size). opset: at least 16 (GridSample).
    """
    try:
        import onnx
    except ImportError:
        raise DetrToolkitError("ONNX export needs the onnx package: pip install 'detr-toolkit[export]'") from None
    detector.check_input_size(imgsz)
    check_writable(file)  # before the export's work, not after it
    model = ExportOutputs(fuse_model(copy.deepcopy(detector)).float().cpu().eval())
    for module in model.modules():  # input-size-dependent constants (ViT position embeddings) computed once here
        if callable(getattr(module, "fix_input_size", None)):
            module.fix_input_size(imgsz, imgsz)
    images = torch.rand(batch, 3, imgsz, imgsz)
    dynamic_axes = {"images": {0: "batch"}, "output0": {0: "batch"}} if dynamic else None
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():  # (no inference-mode tracing)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes become constants: H and W are fixed
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1")  # strided slices stay ops
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.onnx's notes about its own internals
        torch.onnx.export(model, (images,), buffer, dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["output0"], dynamic_axes=dynamic_axes)  # fmt: skip
    graph = onnx.load_from_string(buffer.getvalue())
    for key, value in {**metadata, "imgsz": f"[{imgsz}, {imgsz}]", "batch": str(batch)}.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph)
    return write_file(file, graph.SerializeToString())
