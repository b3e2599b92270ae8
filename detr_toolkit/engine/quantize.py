"""int8 ONNX: static quantization of an exported detector with onnxruntime, calibrated on images (a dataset's
or a folder's).

QDQ format (QuantizeLinear/DequantizeLinear pairs around each quantized op, as TensorRT and onnxruntime's CPU
int8 kernels read it), int8 weights per output channel, uint8 activations scaled from their calibrated ranges.
Only the backbone and the encoder are quantized (their convolutions and matrix products, which hold nearly all
the work, and the cheap ops between them). The decoder stays float32: its box refinement, sampling offsets and attention
weights, and the class scores that top-k ranks, move by whole pixels and ranks when rounded to 8 bits, for a few percent
of the time. A segmentation model's mask head stays float32 too: quantized, its masks lost more (RT-DETR-Tiny-Seg on
generated shapes: mask mAP50-95 0.510 against 0.516 with it float, 0.529 all float32; and at 640 px on an AVX2 CPU
without VNNI it ran slower: 127 ms against 114).
"""

from __future__ import annotations

import ast
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.images import IMAGE_SUFFIXES, read_image
from ..data.sources import Frame
from ..data.splits import load_split
from ..errors import DatasetError, DetrToolkitError
from ..extras import require
from ..files import write_file
from .predictor import preprocess
from .progress import heartbeat

# The ops that hold the work, and those between them that onnxruntime runs on int8 tensors as they are (activations,
# residual sums, concatenations, pooling, upsampling): quantizing those too keeps tensors in int8 from one
# convolution to the next instead of dequantizing after each (rtdetr-l: 0.46x float32 time instead of 0.53x).
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm", "Relu", "Add", "Concat", "MaxPool", "Resize")
QUANTIZED_PARTS = ("detector.backbone", "detector.encoder")  # module paths whose ops are quantized


def node_module(node) -> str:
    """The module path (`detector.encoder.aifi.linear2`) a node of an exported graph was traced from: from the
    dynamo exporter's name scopes, or from the TorchScript tracer's node name (`/detector/encoder/aifi/...`)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = ast.literal_eval(prop.value)  # a list's repr; literal_eval evaluates no code
            return scopes[-2] if len(scopes) >= 2 else ""
    return node.name.strip("/").replace("/", ".")


def nodes_to_quantize(graph) -> list[str]:
    """Names of the graph's QUANTIZED_OPS nodes inside QUANTIZED_PARTS; matrix products only where one side is a
    weight (a linear layer's): a product of two activations (attention's Q.K^T and weights.V), quantized per tensor,
    costs more in quantize/dequantize steps than its int8 kernel saves (DEIMv2-S's ViT: 486 ms with them, 344
    without, 435 in float32)."""
    weights = {initializer.name for initializer in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type in QUANTIZED_OPS
        and node_module(node).startswith(QUANTIZED_PARTS)
        and (node.op_type != "MatMul" or node.input[1] in weights)
    ]


def calibration_images(data: str | Path, imgsz: int, count: int) -> list[np.ndarray]:
    """Up to `count` images, evenly spread, each preprocessed as predict does: (3, imgsz, imgsz) float32 RGB in
    0..1. data: a folder of images (calibration needs neither labels nor the model's classes), or a dataset file:
    its train split's images (its val split's where it has no train split)."""
    data = Path(data)
    if data.is_dir():
        files = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    else:
        try:
            annotations, _ = load_split(data, "train")
        except DatasetError:
            annotations, _ = load_split(data, "val")
        files = [annotation.image for annotation in annotations]
    if not files:
        raise DatasetError(f"{data}: no images to calibrate int8 on")
    picked = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(count, len(files)))]
    frames = [Frame(read_image(file), str(file)) for file in picked]
    return [preprocess([frame], imgsz, torch.device("cpu"), torch.float32)[0].numpy() for frame in frames]


class _Calibration:
    """onnxruntime's CalibrationDataReader: one image at a time as {input name: (1, 3, H, W) float32}."""

    def __init__(self, input_name: str, images: Iterator[np.ndarray]):
        self.input_name = input_name
        self.images = images

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self.images, None)
        return None if image is None else {self.input_name: image[None]}


def quantize_int8(float_file: Path, int8_file: Path, images: Sequence[np.ndarray]) -> Path:
    """Write the int8 QDQ version of the exported `float_file` to `int8_file`, atomically; -> its path.

    images: calibration inputs, each (3, H, W) float32 RGB in 0..1 at the graph's input size. The float file's
    metadata (names, input size, ...) is kept, with `quantization` added.
    """
    onnx = require("onnx", "int8 export", "export")
    quantization = require("onnxruntime.quantization", "int8 export", "export")
    quant_pre_process = require("onnxruntime.quantization.shape_inference", "int8 export", "export").quant_pre_process
    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        # shapes inferred; the graph left unoptimized, so that its nodes keep the module paths that pick them
        # (onnxruntime optimizes the quantized graph when it loads it)
        quant_pre_process(str(float_file), str(prepared), skip_symbolic_shape=True, skip_optimization=True)
        model = onnx.load(prepared)
        nodes = nodes_to_quantize(model.graph)
        if not nodes:  # (an empty list would have onnxruntime quantize every op, the decoder's too)
            raise DetrToolkitError(f"{float_file}: no backbone or encoder ops to quantize (not a detr-toolkit export)")
        input_name = model.graph.input[0].name
        quantized = Path(work) / "int8.onnx"
        with heartbeat(f"calibrating {int8_file.name} on {len(images)} images"):
            quantization.quantize_static(
                str(prepared), str(quantized), _Calibration(input_name, iter(images)),
                quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                weight_type=quantization.QuantType.QInt8, activation_type=quantization.QuantType.QUInt8,
                calibrate_method=quantization.CalibrationMethod.MinMax,
                op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=nodes,
            )  # fmt: skip
        graph = onnx.load(quantized)
    metadata = {p.key: p.value for p in onnx.load(float_file, load_external_data=False).metadata_props}
    del graph.metadata_props[:]
    metadata["quantization"] = f"int8 QDQ, per-channel weights, {len(nodes)} ops of {', '.join(QUANTIZED_PARTS)}"
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    return write_file(int8_file, graph.SerializeToString())
