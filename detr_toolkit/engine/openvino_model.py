"""An exported detector in OpenVINO's format, run by OpenVINO on the CPU; the layout and metadata it reads are
`exported_model.py`'s.

A folder `<name>_openvino_model/` holds the graph (`<name>.xml`), its weights (`<name>.bin`) and `metadata.yaml`
(class names, input size, stride, the model config), as `detect export --format openvino` writes it and as
ultralytics writes its own OpenVINO exports. It computes in float32, or with `half=True` in bfloat16 where the CPU
has native bf16 (OpenVINO's own default there), as `predict(half=True)` of the PyTorch model does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import load_yaml
from ..errors import CheckpointError, ConfigError, LimitError
from ..extras import require
from .exported_model import ExportedModel, Shape
from .predictor import inference_dtype
from .signal_stack import kept_signal_stack

FOLDER_SUFFIX = "_openvino_model"
METADATA_FILE = "metadata.yaml"


def openvino_module():
    return require("openvino", "OpenVINO's format", "openvino")


def graph_file(source: str | Path) -> Path:
    """The .xml graph of an OpenVINO export given as its folder or as the file itself; CheckpointError when a
    folder does not hold exactly one."""
    source = Path(source)
    if not source.is_dir():
        return source
    graphs = sorted(source.glob("*.xml"))
    if len(graphs) != 1:
        raise CheckpointError(f"{source}: an OpenVINO folder holds one .xml graph, this one {len(graphs)}")
    return graphs[0]


class OpenVinoModel(ExportedModel):
    """An OpenVINO export (its folder or .xml file), run by OpenVINO on the CPU. Attributes (beyond
    `ExportedModel`'s): compiled (OpenVINO's compiled model), precision ("f32" or "bf16")."""

    runtime = "OpenVINO"

    @staticmethod
    def reads(source: object) -> bool:
        if not isinstance(source, (str, Path)):
            return False
        path = Path(source)
        return (
            path.suffix.lower() == ".xml"
            or path.name.endswith(FOLDER_SUFFIX)
            or (path.is_dir() and any(path.glob("*.xml")))
        )

    def _open(self, device: torch.device | None) -> tuple[dict[str, str], list[Shape], list[Shape]]:
        if device is not None and device.type != "cpu":
            raise ConfigError(f"{self.file}: OpenVINO models run on the CPU here, not on {device}")
        openvino = openvino_module()
        self.target = torch.device("cpu")
        graph = graph_file(self.file)
        metadata_file = graph.parent / METADATA_FILE
        if not metadata_file.is_file():
            raise CheckpointError(f"{graph.parent}: no {METADATA_FILE} beside the graph (class names, input size)")
        try:
            metadata = load_yaml(metadata_file)  # within the YAML limits: size, aliases expanded
        except (ConfigError, LimitError) as error:
            raise CheckpointError(str(error)) from None
        self.dtype = inference_dtype(self.target, self.half)  # bfloat16 or float32, as for a PyTorch model
        self.precision = "bf16" if self.dtype == torch.bfloat16 else "f32"
        try:
            with kept_signal_stack():
                self.compiled = openvino.Core().compile_model(
                    str(graph), "CPU", {"INFERENCE_PRECISION_HINT": self.precision}
                )
        except Exception as error:  # noqa: BLE001 (OpenVINO raises RuntimeError and its own kinds for unreadable files)
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"{graph}: not a model OpenVINO can run ({reason})") from None
        shapes = [
            [[dim.get_length() if dim.is_static else None for dim in port.get_partial_shape()] for port in ports]
            for ports in (self.compiled.inputs, self.compiled.outputs)
        ]
        return {str(key): value if isinstance(value, str) else str(value) for key, value in metadata.items()}, *shapes

    def _run(self, images: np.ndarray) -> list[np.ndarray]:
        results = self.compiled(images)
        return [results[port] for port in self.compiled.outputs]
