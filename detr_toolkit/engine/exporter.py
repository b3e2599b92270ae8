"""Export: a detector -> an ONNX graph that onnxruntime (or TensorRT, OpenVINO, ...) runs without PyTorch, and that
graph -> OpenVINO's format. `export_model` is the whole job `RTDETR.export` asks for (where files go, metadata, the
float32 graph, int8, OpenVINO); the functions after it are its steps.

The graph has ultralytics' RT-DETR export layout (before 8.4), so that code written for theirs reads ours:

    images (B, 3, H, W) float32 RGB in 0..1  ->  output0 (B, Q, 4 + C): cx, cy, w, h in 0..1, then C class scores
    (sigmoid), one row per decoder query; a segmentation model's also output1 (B, Q, H / r, W / r): each query's
    mask logits (task "segment" in the metadata)

and the same metadata (names, imgsz, stride, batch, ...) in the file's metadata_props. It is traced by torch.export
(the `dynamo` exporter, through onnxscript); where that fails, by the TorchScript tracer, with the reason printed.
`dynamic` leaves the batch free, and the height and width too where the model allows it: a model whose position
embeddings are resized for the input size (a ViT's bicubic resize, which ONNX lacks) is fixed at `imgsz`.
"""

from __future__ import annotations

import ast
import copy
import io
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from torch import nn

from ..errors import ConfigError, OutputError
from ..extras import require
from ..files import atomic_folder, check_writable, write_file
from ..nn import Detector, fuse_model
from ..settings import ExportArgs
from .progress import heartbeat

EXPORTERS = ("dynamo", "torchscript")
DYNAMO_MIN_OPSET = 18  # torch.export's ONNX exporter writes this opset or later; earlier ones: the TorchScript tracer
LITERAL_METADATA = ("names", "imgsz", "stride", "batch")  # written to OpenVINO's metadata.yaml as values, not text
MAX_DYNAMIC_BATCH = 1024
MAX_DYNAMIC_SIZE = 4096  # pixels, for a graph of any input size


def export_model(
    detector: Detector,
    config: dict,
    names: dict[int, str],
    source: Path,
    args: ExportArgs,
    score_int8: Callable[[Path, Path, str, int], None],
) -> Path:
    """Write `detector` (of model `config`, class `names`, loaded from `source`) as `args` say; -> the path
    written: the ONNX file or OpenVINO folder (default: beside `source`), or with int8 the int8 one, the float32
    one beside it unless an earlier export is there. `score_int8(int8, float32, data, imgsz)` prints the int8
    file's val mAP beside the float32 one's (`args.val`).

    An int8 export makes its float32 graph in a scratch folder and moves it into place only when the int8 file is
    written, and never over an earlier export: a failed one leaves nothing, a dynamic one stays.
    """
    from .openvino_model import FOLDER_SUFFIX, openvino_module

    openvino = args.format == "openvino"
    if openvino:
        openvino_module()  # a missing package is said before the export's work
        target = Path(args.file) if args.file else source.parent / f"{source.stem}{FOLDER_SUFFIX}"
        name = target.name.removesuffix(FOLDER_SUFFIX) or source.stem
        check_writable(target / f"{name}.xml")
    else:
        target = Path(args.file) if args.file else source.with_suffix(".onnx")
        name = target.stem
    imgsz = args.imgsz or config["imgsz"]
    if args.int8 and not args.data:
        raise ConfigError("int8=True: needs data= (a dataset or a folder of images to calibrate the int8 ranges)")
    int8 = None
    if args.int8:  # the images first: a folder without images or a corrupt one fails before the export's work
        from .quantize import calibration_images, quantize_int8

        images = calibration_images(args.data, imgsz, args.calibration)
    metadata = export_metadata(detector, config, names, source.stem)
    with tempfile.TemporaryDirectory() as scratch:
        staging = Path(scratch)
        float_file = staging / f"{name}.onnx" if openvino or args.int8 else target
        exported = export_onnx(detector, metadata, float_file, imgsz, args.batch, args.dynamic, args.opset,
                               args.exporter)  # fmt: skip
        if args.int8:
            int8 = quantize_int8(exported, (staging if openvino else target.parent) / f"{name}-int8.onnx", images)
        if openvino:
            exported = export_openvino(exported, staging / target.name if args.int8 else target)
            if int8 is not None:
                int8 = export_openvino(int8, target.with_name(f"{name}-int8{FOLDER_SUFFIX}"))
        if int8 is not None:
            if args.val:
                score_int8(int8, exported, args.data, imgsz)
            if target.exists():
                print(f"kept {target}: an earlier export is there (this export's float32 graph is not written)")
            else:
                exported = Path(shutil.move(exported, target))
    return int8 or exported


def export_metadata(detector: Detector, config: dict, names: dict[int, str], stem: str) -> dict[str, str]:
    """What an exported file says of its model (text, as ONNX metadata_props hold it); `export_onnx` adds the
    input size, batch and exporter."""
    return {
        "description": f"detr-toolkit {stem}", "task": detector.task, "stride": str(detector.stride),
        "names": str(names),
        "family": config["decoder"]["type"],
        "input": "RGB in 0..1" + (", normalised inside the graph" if detector.mean is not None else ""),
        "config": yaml.safe_dump(config, sort_keys=False),
    }  # fmt: skip


class ExportOutputs(nn.Module):
    """The detector with its outputs in the export layout. Shapes: (B, 3, H, W) -> (B, Q, 4 + C), and a segmentation
    model's mask logits (B, Q, H / r, W / r)."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector
        self.output_names = ["output0"] + (["output1"] if detector.mask_head is not None else [])

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        outputs = self.detector(images)
        rows = torch.cat([outputs["boxes"], outputs["logits"].sigmoid()], dim=-1)
        return (rows, outputs["masks"]) if "masks" in outputs else rows


def any_size_allowed(detector: Detector) -> bool:
    """Whether an exported graph of `detector` can take any input size: no part has to be fixed at one."""
    return not any(callable(getattr(module, "fix_input_size", None)) for module in detector.modules())


def prepare_for_export(detector: Detector, imgsz: int, any_size: bool) -> ExportOutputs:
    """A fused float32 CPU copy in the export layout; input-size-dependent constants computed once for imgsz (ViT
    position embeddings), or, for a graph of any size, computed in the graph (decoder anchors)."""
    model = ExportOutputs(fuse_model(copy.deepcopy(detector)).float().cpu().eval()).eval()
    for module in model.modules():
        if any_size and callable(getattr(module, "free_input_size", None)):
            module.free_input_size()
        elif callable(getattr(module, "fix_input_size", None)):
            module.fix_input_size(imgsz, imgsz)
    return model


def trace_dynamo(model: ExportOutputs, images: torch.Tensor, dynamic: bool, any_size: bool, opset: int) -> bytes:
    """torch.export -> ONNX (onnxscript). dynamic: a free batch; any_size: free height and width too (multiples of
    the model's stride)."""
    shapes = None
    if dynamic:
        shapes = {0: torch.export.Dim("batch", max=MAX_DYNAMIC_BATCH)}
        if any_size:
            stride = model.detector.stride
            shapes[2] = stride * torch.export.Dim("height", min=1, max=MAX_DYNAMIC_SIZE // stride)
            shapes[3] = stride * torch.export.Dim("width", min=1, max=MAX_DYNAMIC_SIZE // stride)
        shapes = {"images": shapes}
        images = images.expand(max(2, len(images)), -1, -1, -1)  # torch.export takes a batch of 1 as fixed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's notes about its own internals
        program = torch.onnx.export(model, (images,), dynamo=True, opset_version=opset, input_names=["images"],
                                    output_names=model.output_names, dynamic_shapes=shapes, verbose=False)  # fmt: skip
    return program.model_proto.SerializeToString()


def trace_torchscript(model: ExportOutputs, images: torch.Tensor, dynamic: bool, opset: int) -> bytes:
    """The TorchScript tracer -> ONNX. dynamic: a free batch (height and width are constants in its trace)."""
    dynamic_axes = {name: {0: "batch"} for name in ["images", *model.output_names]} if dynamic else None
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():  # (no inference-mode tracing)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes become constants: H and W are fixed
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1")  # strided slices stay ops
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.onnx's notes about its own internals
        torch.onnx.export(model, (images,), buffer, dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=model.output_names, dynamic_axes=dynamic_axes)  # fmt: skip
    return buffer.getvalue()


def export_onnx(
    detector: Detector,
    metadata: dict[str, str],
    file: str | Path,
    imgsz: int,
    batch: int,
    dynamic: bool,
    opset: int,
    exporter: str = "dynamo",
) -> Path:
    """Write `detector` (fused, float32, CPU) as ONNX to `file`, atomically; -> the file's path.

    metadata: string key/values stored in the file (class names, input size, ...).
    dynamic: leave the batch dimension free, and the height and width where the model allows it (see
    `any_size_allowed`; dynamo exporter only). opset: at least 16 (GridSample). exporter: "dynamo" (torch.export,
    falling back to the TorchScript tracer where it cannot trace the model) or "torchscript".
    """
    onnx = require("onnx", "ONNX export", "export")
    detector.check_input_size(imgsz, batch=batch)
    check_writable(file)  # before the export's work, not after it
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        fixed = ", at a fixed input size" if dynamic and any_size_allowed(detector) else ""
        print(f"opset={opset}: exported with the TorchScript tracer{fixed} (torch.export writes opset "
              f"{DYNAMO_MIN_OPSET} and up)")  # fmt: skip
        exporter = "torchscript"
    any_size = dynamic and exporter == "dynamo" and any_size_allowed(detector)
    images = torch.rand(batch, 3, imgsz, imgsz)
    with heartbeat(f"exporting {Path(file).name}"):
        graph_bytes, exporter = _trace(detector, images, dynamic, any_size, opset, exporter)
    graph = onnx.load_from_string(graph_bytes)
    written_opset = next(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx"))
    if written_opset != opset:
        raise OutputError(f"{file}: {exporter} wrote opset {written_opset}, not opset={opset}; nothing written")
    written = {**metadata, "imgsz": f"[{imgsz}, {imgsz}]", "batch": str(batch), "exporter": exporter}
    for key, value in written.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph)
    return write_file(file, graph.SerializeToString())


def _trace(
    detector: Detector, images: torch.Tensor, dynamic: bool, any_size: bool, opset: int, exporter: str
) -> tuple[bytes, str]:
    """The ONNX graph of `detector` on `images` (B, 3, H, W), and the exporter that traced it: `exporter`, or the
    TorchScript tracer where torch.export cannot trace the model (said in a warning; the size is then fixed)."""
    imgsz = images.shape[-1]
    if exporter == "dynamo":
        try:
            graph = trace_dynamo(prepare_for_export(detector, imgsz, any_size), images, dynamic, any_size, opset)
            return graph, exporter
        except Exception as error:  # noqa: BLE001 (torch.export raises many kinds; the fallback covers them all)
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            print(f"warning: torch.export could not trace the model ({type(error).__name__}: {reason[:200]}); "
                  "exported with the TorchScript tracer, at a fixed input size")  # fmt: skip
    return trace_torchscript(prepare_for_export(detector, imgsz, False), images, dynamic, opset), "torchscript"


def export_openvino(onnx_file: str | Path, folder: str | Path) -> Path:
    """Convert an exported ONNX file to OpenVINO's format in `folder`: `<onnx name>.xml` (the graph), `.bin` (its
    weights, float32; int8 where the ONNX file is quantized) and `metadata.yaml` (the ONNX file's metadata, as
    ultralytics writes it beside its own OpenVINO exports); written whole, then put in place. -> the folder."""
    import onnx

    from .openvino_model import METADATA_FILE, openvino_module

    openvino, onnx_file = openvino_module(), Path(onnx_file)
    metadata = {p.key: p.value for p in onnx.load(str(onnx_file), load_external_data=False).metadata_props}
    metadata.update({key: ast.literal_eval(metadata[key]) for key in LITERAL_METADATA if key in metadata})
    with atomic_folder(folder) as tmp:
        graph = openvino.convert_model(str(onnx_file))
        try:
            openvino.save_model(graph, str(tmp / f"{onnx_file.stem}.xml"), compress_to_fp16=False)
        except RuntimeError as error:  # OpenVINO's writer reports a full disk as "basic_ios::clear: iostream error"
            free = shutil.disk_usage(tmp).free >> 20
            raise OutputError(f"{folder}: cannot write the OpenVINO model ({str(error).splitlines()[-1]}; {free:,} MB "
                              "free on its disk)") from None  # fmt: skip
        write_file(tmp / METADATA_FILE, yaml.safe_dump(metadata, sort_keys=False).encode())
    return Path(folder)
