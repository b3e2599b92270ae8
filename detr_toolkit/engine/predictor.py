"""Prediction: frames -> preprocess -> model -> postprocess -> Results.

Preprocessing and postprocessing follow ultralytics' RT-DETR predictor exactly, so the same weights give
the same detections: the image is stretched (not letterboxed) to imgsz x imgsz with bilinear resizing,
scaled to 0..1 without mean/std, and the top-k (query, class) pairs by sigmoid score are kept.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import time
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any, Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert

from ..data.sources import Frame, iter_frames
from ..errors import ModelOutputError
from ..nn import Detector, fuse_model
from ..nn.packed_linear import can_pack_linears, pack_linears
from ..results import Results
from ..settings import PredictArgs
from .cpu_memory import keep_freed_memory
from .threads import ThreadTuner

MASK_RESIZE_VALUES = 1 << 26  # float32 values resized at once by masks_at_size (256 MB)


def preprocess(frames: Sequence[Frame], imgsz: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Frames -> (B, 3, imgsz, imgsz) RGB in 0..1; tensor frames are used as given (no resize)."""
    if frames[0].tensor is not None:
        return torch.stack([f.tensor for f in frames]).to(device, dtype)
    resized = np.stack([cv2.resize(f.image, (imgsz, imgsz), interpolation=cv2.INTER_LINEAR) for f in frames])
    batch = torch.from_numpy(resized).to(device).permute(0, 3, 1, 2).flip(1)  # BHWC BGR -> BCHW RGB
    return batch.to(dtype).div_(255)


def postprocess(boxes: torch.Tensor, scores: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Model outputs -> detections (B, K, 6): x1, y1, x2, y2 (0..1), score, class, best score first, and the query
    (B, K) each came from.

    boxes: (B, Q, 4) cxcywh in 0..1; scores: (B, Q, C) class probabilities. K = min(top_k, Q * C) (query, class)
    pairs.
    """
    num_classes = scores.shape[-1]
    scores, index = scores.flatten(1).topk(min(top_k, scores.shape[1] * num_classes), dim=1)
    query = index.div(num_classes, rounding_mode="floor")
    picked = boxes.gather(1, query[..., None].expand(-1, -1, 4))
    classes = (index - query * num_classes).to(scores.dtype)
    detections = torch.cat([box_convert(picked, "cxcywh", "xyxy"), scores[..., None], classes[..., None]], dim=-1)
    return detections, query


def select_detections(
    detections: torch.Tensor, orig_shape: tuple[int, int], conf: float, classes: Sequence[int] | None, max_det: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's (K, 6) -> (N, 6) with score > conf, wanted classes, at most max_det, boxes in pixels, and their
    positions (N,) in the K."""
    keep = detections[:, 4] > conf
    if classes is not None:
        keep &= torch.isin(detections[:, 5], torch.tensor(classes, dtype=detections.dtype, device=detections.device))
    kept = keep.nonzero()[:max_det, 0]
    detections = detections[kept]
    height, width = orig_shape
    detections[:, [0, 2]] *= width
    detections[:, [1, 3]] *= height
    return detections, kept


def masks_at_size(mask_logits: torch.Tensor, orig_shape: tuple[int, int],
                  chunk_values: int = MASK_RESIZE_VALUES) -> torch.Tensor:  # fmt: skip
    """Mask logits (N, h, w) -> masks (N, H, W) uint8 at the image's size: the logits resized bilinearly, then
    1 where above 0 (RF-DETR's post-processing). Resized a few masks at a time, at most `chunk_values` float32
    values at once: 100 masks of a 4K photo would take 3.3 GB in one go, 0.8 GB as uint8 masks."""
    masks = torch.empty(len(mask_logits), *orig_shape, dtype=torch.uint8, device=mask_logits.device)
    step = max(1, chunk_values // (orig_shape[0] * orig_shape[1]))
    for start in range(0, len(mask_logits), step):
        resized = F.interpolate(mask_logits[start : start + step, None].float(), size=orig_shape, mode="bilinear",
                                align_corners=False)  # fmt: skip
        masks[start : start + step] = resized[:, 0] > 0
    return masks


def inference_dtype(device: torch.device, half: bool) -> torch.dtype:
    """The compute precision for `half`: float16 on CUDA; bfloat16 on CPUs with native bf16 (AVX512-BF16 or AMX),
    where oneDNN runs convolutions and matmuls about twice as fast; float32 otherwise."""
    if not half:
        return torch.float32
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return torch.float32


def weights_version(model: nn.Module) -> tuple:
    """A value that changes whenever a parameter or buffer of `model` is replaced or changed in place
    (`load_state_dict`, an optimizer step): torch counts each tensor's in-place changes in `_version`."""
    return tuple((id(t), t._version) for t in itertools.chain(model.parameters(), model.buffers()))


def check_finite(boxes: torch.Tensor, scores: torch.Tensor, where: str, dtype: torch.dtype) -> None:
    """ModelOutputError when a model's boxes or scores hold NaN or inf: broken weights give no detections to trust
    (and would score as a positive mAP)."""
    if not (bool(torch.isfinite(boxes).all()) and bool(torch.isfinite(scores).all())):
        cause = "broken weights, or values too large for half precision" if dtype != torch.float32 else "broken weights"
        raise ModelOutputError(f"{where}: the model's outputs are not finite (NaN or inf): {cause}")


class Inference(Protocol):
    """A model ready to run: (B, 3, H, W) RGB in 0..1 -> boxes (B, Q, 4) cxcywh in 0..1, class scores (B, Q, C) and
    a segmentation model's mask logits (B, Q, h, w) (None for a detector), float32 on `device`. `input_dtype`: what
    it takes; `dtype`: the precision it computes in. Implemented by `TorchInference` (a PyTorch detector) and
    `exported_model.ExportedModel` (an exported file, run by onnxruntime or OpenVINO)."""

    device: torch.device
    dtype: torch.dtype
    input_dtype: torch.dtype

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]: ...


class TorchInference:
    """A detector made ready for inference on `device` in `dtype` (see `inference_dtype`): a fused copy (conv + batch
    norm folded), channels-last with packed linear layers on the CPU, made from the model's weights as they were
    when it was built (`serves` tells whether they still are). On the CPU each batch runs with the thread count
    `threads` picks (one tuner can serve a loop over several of these, as training's validations)."""

    def __init__(
        self,
        model: Detector,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        threads: ThreadTuner | None = None,
    ):
        self.built_from = weights_version(model)
        self.threads = threads or ThreadTuner()
        self.device = device
        self.dtype = dtype
        # CUDA float16 converts the weights; CPU bfloat16 runs under autocast, which keeps the precision-sensitive
        # ops (sigmoid, box refinement, grid sampling) in float32.
        self.autocast = dtype == torch.bfloat16
        self.input_dtype = torch.float32 if self.autocast else dtype  # that of the weights, too
        if device.type == "cpu":
            self.threads.prepare()
        self.model = fuse_model(copy.deepcopy(model)).to(device, self.input_dtype).eval()
        if device.type == "cpu":
            keep_freed_memory()
            self.model = self.model.to(memory_format=torch.channels_last)
            if can_pack_linears(dtype):  # last: a packed model cannot be moved or copied
                pack_linears(self.model, dtype)

    def serves(self, model: Detector, device: torch.device, dtype: torch.dtype) -> bool:
        """Whether this runs `model` as it is now, on `device` in `dtype`."""
        return (self.device, self.dtype) == (device, dtype) and self.built_from == weights_version(model)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        images = images.to(self.device, self.input_dtype)
        if self.device.type == "cpu":
            images = images.contiguous(memory_format=torch.channels_last)
        with (
            torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast),
            self.threads.measure(len(images)) if self.device.type == "cpu" else contextlib.nullcontext(),
        ):
            outputs = self.model(images)
        masks = outputs["masks"].float() if "masks" in outputs else None
        return outputs["boxes"].float(), outputs["logits"].float().sigmoid(), masks


class Predictor:
    """Runs a model (`Inference`) on sources: frames -> preprocess -> model -> postprocess -> Results."""

    def __init__(self, model: Inference, names: dict[int, str]):
        self.model = model
        self.names = names

    @torch.inference_mode()
    def predict_batch(self, frames: Sequence[Frame], options: PredictArgs) -> list[Results]:
        start = time.perf_counter()
        images = preprocess(frames, options.imgsz, self.model.device, self.model.input_dtype)
        preprocessed = time.perf_counter()
        boxes, scores, mask_logits = self.model(images)
        inferred = time.perf_counter()
        check_finite(boxes, scores, frames[0].path, self.model.dtype)
        detections, queries = postprocess(boxes, scores, boxes.shape[1])
        results = []
        for i, frame in enumerate(frames):
            orig_shape = frame.image.shape[:2]
            kept, index = select_detections(detections[i], orig_shape, options.conf, options.classes, options.max_det)
            masks = None if mask_logits is None else masks_at_size(mask_logits[i, queries[i, index]], orig_shape).cpu()
            results.append(Results(frame.image, frame.path, self.names, kept.cpu(), masks=masks))
        finished = time.perf_counter()
        per_image = 1000 / len(frames)
        speed = {
            "preprocess": (preprocessed - start) * per_image,
            "inference": (inferred - preprocessed) * per_image,
            "postprocess": (finished - inferred) * per_image,
        }
        for result in results:
            result.speed = speed
        return results

    def stream(self, source: Any, options: PredictArgs) -> Iterator[tuple[Frame, Results, tuple[int, int]]]:
        """Yield (frame, its Results, model input (h, w)) for every frame of `source`, `batch` frames at a time."""
        frames = iter_frames(source)
        while chunk := list(islice(frames, options.batch)):
            # Tensors and arrays cannot share a batch (one is resized, the other not).
            for group in _split_by_kind(chunk):
                tensor = group[0].tensor
                input_hw = tuple(tensor.shape[1:]) if tensor is not None else (options.imgsz, options.imgsz)
                for frame, result in zip(group, self.predict_batch(group, options)):
                    yield frame, result, input_hw


def _split_by_kind(frames: list[Frame]) -> list[list[Frame]]:
    groups: list[list[Frame]] = []
    for frame in frames:
        if groups and (groups[-1][0].tensor is None) == (frame.tensor is None):
            groups[-1].append(frame)
        else:
            groups.append([frame])
    return groups
