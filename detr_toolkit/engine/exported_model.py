"""An exported detector file, run by an inference runtime (onnxruntime: `onnx_model.py`; OpenVINO:
`openvino_model.py`; model.py picks the runtime by the file): what `RTDETR("model.onnx")` or
`RTDETR("model_openvino_model/")` predicts and validates with.

Both read the layout `detect export` writes and ultralytics exports RT-DETR in:

    images (B, 3, H, W) float32 RGB in 0..1  ->  output0 (B, Q, 4 + C): cx, cy, w, h in 0..1, then C class scores

(ultralytics before 8.4 too), or, from ultralytics 8.4 on, the top K (query, class) pairs already picked:

    output0 (B, K, 6): cx, cy, w, h in 0..1, score, class index

with the class names, input size and stride in the file's metadata. Normalisation (mean/std) is inside the graph.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import limits
from ..config import class_names, parse_yaml
from ..errors import CheckpointError, ConfigError, LimitError
from ..nn import check_input_size
from ..nn.decoders import DECODERS

Shape = Sequence[int | str | None]  # a dimension that is not an int is free (dynamic)
MAX_STRIDE = 1024  # a detector's largest feature stride (32 for every family we know)


class ExportedModel:
    """An exported detector file; called as `TorchInference` is (see `predictor.Inference`).

    A runtime's subclass opens the file (`_open`) and runs an image batch through it (`_run`).
    Attributes: file, task ("detect", or "segment" for a file with mask logits), target (the device it runs on),
    half (computing in the runtime's half precision), names ({class index: name}), config (the model config the
    file was exported from, with the file's input size; for a file from ultralytics, that size only), imgsz ((H, W),
    or None where the file takes any size), batch (the file's batch size, or None where it is dynamic), stride.
    """

    runtime = ""  # its name, in messages
    dtype = torch.float32  # what the file's outputs are (an int8 file dequantizes them)
    input_dtype = torch.float32

    @staticmethod
    def reads(source: object) -> bool:
        """Whether `source` names a file of this runtime."""
        raise NotImplementedError

    def _open(self, device: torch.device | None) -> tuple[dict[str, str], list[Shape], list[Shape]]:
        """Open self.file for `device` (None: the best one there is), set self.target; -> (metadata, input shapes,
        output shapes)."""
        raise NotImplementedError

    def _run(self, images: np.ndarray) -> list[np.ndarray]:
        """(B, 3, H, W) float32 -> the outputs (output0, and a segmentation model's output1), as numpy arrays."""
        raise NotImplementedError

    def __init__(self, file: str | Path, device: torch.device | None = None, half: bool = False):
        self.file, self.half = Path(file), half
        if not self.file.exists():
            raise CheckpointError(f"{self.file}: no such file")
        if not (self.file.is_file() or self.file.is_dir()):  # reading a FIFO would wait for a writer forever
            raise CheckpointError(f"{self.file}: not a regular file (a FIFO, socket or device)")
        metadata, inputs, outputs = self._open(device)
        self.device = torch.device("cpu")  # where the images go in and the outputs come out (through numpy)
        self._check_layout(metadata, inputs, outputs)
        self.names = self._read_names(metadata, outputs[0][2])
        self.top_k = outputs[0][2] == 6 and self._top_k_layout(metadata, self.names)
        self.stride = self._integer(metadata.get("stride", "32"), "its stride", MAX_STRIDE)
        self.config = self._read_config(metadata)
        batch, _, height, width = inputs[0]
        self.batch = batch if isinstance(batch, int) else None
        self.imgsz = (height, width) if isinstance(height, int) and isinstance(width, int) else None
        if self.imgsz is not None:  # the size the file runs, whatever the config it was exported from says
            if height % self.stride or width % self.stride:
                raise CheckpointError(f"{self.file}: takes {height}x{width} images, not a multiple of its stride "
                                      f"{self.stride}")  # fmt: skip
            self.config["imgsz"] = height
        elif "imgsz" in self.config:  # the size a graph of any size runs by default
            imgsz = self._integer(self.config["imgsz"], "its config's imgsz", limits.IMAGE_SIZE.value)
            if imgsz % self.stride:
                raise CheckpointError(f"{self.file}: its config's imgsz {imgsz} is not a multiple of its stride "
                                      f"{self.stride}")  # fmt: skip
            self.config["imgsz"] = imgsz

    def reopen(self, device: torch.device | None, half: bool) -> ExportedModel:
        """This file, opened for `device` and precision (itself if that is how it is open)."""
        if device in (None, self.target) and half == self.half:
            return self
        return type(self)(self.file, device, half)

    def _check_layout(self, metadata: dict[str, str], inputs: list[Shape], outputs: list[Shape]) -> None:
        """CheckpointError unless the file is a detector in the RT-DETR export layout with class names."""
        self.task = metadata.get("task", "detect")
        if "names" not in metadata or self.task not in ("detect", "segment"):
            raise CheckpointError(
                f"{self.file}: not a detector exported by detr-toolkit or ultralytics (no class names in its metadata)"
            )
        if metadata.get("head", "RTDETRDecoder") != "RTDETRDecoder":  # ultralytics names its model's head
            raise CheckpointError(
                f"{self.file}: not an RT-DETR layout: an ultralytics model with a {metadata['head']} head"
            )
        expected = [3, 4] if self.task == "segment" else [3]
        if len(inputs) != 1 or len(inputs[0]) != 4 or [len(o) for o in outputs] != expected:
            raise CheckpointError(
                f"{self.file}: not an RT-DETR layout: it takes {[list(i) for i in inputs]} and gives "
                f"{[list(o) for o in outputs]}; expected one image batch (B, 3, H, W) -> one (B, queries, 4 + classes)"
                + (" and mask logits (B, queries, h, w)" if self.task == "segment" else "")
            )
        if inputs[0][1] != 3 and isinstance(inputs[0][1], int):
            raise CheckpointError(f"{self.file}: takes images of {inputs[0][1]} channels, not 3 (RGB)")

    def _integer(self, value: object, what: str, high: int) -> int:
        """A metadata number (text, as metadata holds it) -> an int in 1..high; CheckpointError otherwise."""
        text = str(value).strip()
        if not (text.isdigit() and len(text) <= len(str(high)) and 1 <= int(text) <= high):
            raise CheckpointError(f"{self.file}: {what} {text[:20]!r} in its metadata is not an integer in 1..{high}")
        return int(text)

    def _read_config(self, metadata: dict[str, str]) -> dict[str, Any]:
        """The model config the file was exported from (YAML text in its metadata, within the YAML limits), or {}."""
        if "config" not in metadata:
            return {}
        try:
            config = parse_yaml(metadata["config"], f"{self.file}: the config in its metadata")
        except (ConfigError, LimitError) as error:
            raise CheckpointError(str(error)) from None
        decoder = config.get("decoder")
        if not isinstance(decoder, dict) or decoder.get("type") not in DECODERS:
            raise CheckpointError(f"{self.file}: the config in its metadata names no decoder type we know "
                                  f"({', '.join(DECODERS)})")  # fmt: skip
        return config

    def _read_names(self, metadata: dict[str, str], width: int | str | None) -> dict[int, str]:
        text = metadata["names"]
        try:
            limits.YAML_BYTES.check(len(text), f"{self.file}: the class names in its metadata")
            names = ast.literal_eval(text)  # a dict's or list's repr; literal_eval evaluates no code
            if not isinstance(names, (dict, list)):
                raise TypeError
            names = class_names(names, len(names), f"{self.file}: the class names in its metadata")
        except (ConfigError, LimitError) as error:  # keys other than the classes 0..n-1, or too many of them
            raise CheckpointError(str(error)) from None
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            raise CheckpointError(f"{self.file}: unreadable class names in its metadata") from None
        if isinstance(width, int) and width not in (4 + len(names), 6):
            raise CheckpointError(
                f"{self.file}: its output rows hold {width} values, not 4 box values + {len(names)} class scores "
                "(or box, score and class): "
                "not an RT-DETR layout (a YOLO export has (B, 4 + classes, anchors))"
            )
        return names

    @staticmethod
    def _top_k_layout(metadata: dict[str, str], names: dict[int, str]) -> bool:
        """Whether output0 holds picked (query, class) pairs, as ultralytics' RT-DETR exports from 8.4 on do; ours,
        and theirs before, hold every query's class scores (a row of 6 also for 2 classes)."""
        if len(names) != 2:
            return True  # 6 values are not 4 + C scores
        version = re.match(r"(\d+)\.(\d+)", metadata.get("version", ""))
        return (
            metadata.get("author") == "Ultralytics"
            and version is not None
            and tuple(map(int, version.groups())) >= (8, 4)
        )

    def check_input_size(self, size: int, name: str = "imgsz", batch: int = 1) -> int:
        """`size` if the file runs it (its fixed size, or a multiple of its stride; see nn.check_input_size)."""
        if self.imgsz is not None and (size, size) != tuple(self.imgsz):
            raise ConfigError(
                f"{name}={size}: {self.file} was exported for {self.imgsz[0]}x{self.imgsz[1]} inputs "
                f"(export again with imgsz={size}, or with dynamic=True)"
            )
        return check_input_size(size, self.stride, name, batch)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, 3, H, W) RGB in 0..1 -> boxes (B, Q, 4) cxcywh in 0..1, scores (B, Q, C) and a segmentation model's
        mask logits (B, Q, h, w) (else None); float32 on the CPU.

        A file with a fixed batch size runs the images in chunks of it, the last one padded."""
        if self.imgsz is not None and tuple(images.shape[2:]) != tuple(self.imgsz):
            raise ConfigError(
                f"{self.file}: was exported for {self.imgsz[0]}x{self.imgsz[1]} inputs, given "
                f"{images.shape[2]}x{images.shape[3]}"
            )
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        step = self.batch or len(array)
        chunks = []
        for start in range(0, len(array), step):
            chunk = array[start : start + step]
            padding = step - len(chunk)
            if padding:
                chunk = np.concatenate([chunk, np.zeros((padding, *chunk.shape[1:]), chunk.dtype)])
            chunks.append([output[: step - padding] for output in self._run(chunk)])
        rows = torch.from_numpy(np.concatenate([outputs[0] for outputs in chunks])).float()
        masks = (
            torch.from_numpy(np.concatenate([outputs[1] for outputs in chunks])).float()
            if self.task == "segment"
            else None
        )
        if self.top_k:  # each row's score at its class, 0 for the others: postprocess picks the same pairs
            scores = torch.zeros(*rows.shape[:2], len(self.names))
            scores.scatter_(2, rows[..., 5:6].long().clamp(0, len(self.names) - 1), rows[..., 4:5])
            return rows[..., :4], scores, masks
        return rows[..., :4], rows[..., 4:], masks
