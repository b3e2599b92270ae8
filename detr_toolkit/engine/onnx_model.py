"""An exported ONNX detector, run by onnxruntime (on its CUDA provider where onnxruntime-gpu is installed and a GPU
is chosen); the layout and metadata it reads are `exported_model.py`'s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError
from ..extras import require
from .exported_model import ExportedModel, Shape

ONNX_SUFFIX = ".onnx"


def _onnxruntime():
    return require("onnxruntime", "running an ONNX model", "export")


def session_providers(file: Path, device: torch.device | None) -> list[str]:
    """onnxruntime's execution providers for `device`: CUDA's (with the CPU's for what it lacks) or the CPU's.
    None: CUDA's where both torch and onnxruntime see a GPU, else the CPU's."""
    if device is None:
        cuda = torch.cuda.is_available() and "CUDAExecutionProvider" in _onnxruntime().get_available_providers()
        device = torch.device("cuda" if cuda else "cpu")
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in _onnxruntime().get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ConfigError(f"{file}: this onnxruntime cannot run on {device} (for CUDA: pip install onnxruntime-gpu)")


class OnnxModel(ExportedModel):
    """An .onnx file, run by onnxruntime. Attributes (beyond `ExportedModel`'s): session, providers."""

    runtime = "onnxruntime"

    @staticmethod
    def reads(source: object) -> bool:
        return isinstance(source, (str, Path)) and str(source).lower().endswith(ONNX_SUFFIX)

    def _open(self, device: torch.device | None) -> tuple[dict[str, str], list[Shape], list[Shape]]:
        if self.half:
            raise ConfigError(f"half=True: {self.file} computes in the precision it was exported in")
        onnxruntime = _onnxruntime()
        self.providers = session_providers(self.file, device)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # its warnings about unused initializers and node placement are not the user's
        try:
            self.session = onnxruntime.InferenceSession(str(self.file), options, providers=self.providers)
        except Exception as error:  # noqa: BLE001 (onnxruntime raises its own Exception subclasses for unreadable files)
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"{self.file}: not a model onnxruntime can run ({reason})") from None
        image_type = self.session.get_inputs()[0].type
        if image_type != "tensor(float)":  # float16 graphs too: the preprocessing makes float32 images
            raise CheckpointError(f"{self.file}: takes {image_type} images; an RT-DETR export takes tensor(float)")
        self.target = torch.device("cuda" if "CUDAExecutionProvider" in self.providers else "cpu")
        metadata = self.session.get_modelmeta().custom_metadata_map
        return metadata, [i.shape for i in self.session.get_inputs()], [o.shape for o in self.session.get_outputs()]

    def _run(self, images: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.session.get_inputs()[0].name: images})
