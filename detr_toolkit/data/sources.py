"""Prediction sources -> a stream of frames.

Accepted: a file path (image or video), a directory, a glob, an http(s) URL, a list of any of these,
a PIL image, a numpy BGR array, or a torch tensor (3, H, W) / (B, 3, H, W) RGB in 0..1.
Paths are checked up front (a missing file fails before any work); pixels are read lazily.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .. import limits
from ..errors import SourceError
from .images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, read_image, to_bgr_uint8


@dataclass
class Frame:
    """One image to predict on.

    image: BGR uint8 (H, W, 3), what `Results.orig_img` holds.
    path: the file, URL or generated name (`image0.jpg`) it came from.
    tensor: (3, H, W) RGB 0..1 when the user gave a tensor: fed to the model as is, without resizing.
    video_frame: index of the frame within a video, else None.
    """

    image: np.ndarray
    path: str
    tensor: torch.Tensor | None = None
    video_frame: int | None = None


def iter_frames(source: Any) -> Iterator[Frame]:
    """Resolve `source` (see the module docstring) and yield its frames in order."""
    items = _resolve(source)
    counter = 0
    for item in items:
        if isinstance(item, Path):
            if item.suffix.lower() in VIDEO_SUFFIXES:
                yield from _video_frames(item)
            else:
                yield Frame(read_image(item), str(item))
        elif isinstance(item, torch.Tensor):
            yield Frame(_tensor_to_bgr(item), f"image{counter}.jpg", tensor=item)
            counter += 1
        else:
            yield Frame(item, f"image{counter}.jpg")
            counter += 1


def _resolve(source: Any) -> list[Path | np.ndarray | torch.Tensor]:
    """Expand `source` into files, BGR arrays and (3, H, W) tensors; fail early on what is missing."""
    if source is None:
        raise SourceError("no source given (an image, video, directory, glob, URL, array or tensor)")
    if isinstance(source, (list, tuple)):
        return [item for s in source for item in _resolve(s)]
    if isinstance(source, torch.Tensor):
        return list(_check_tensor(source))
    if isinstance(source, np.ndarray):
        return [to_bgr_uint8(source)]
    if _is_pil(source):
        return [cv2.cvtColor(np.asarray(source.convert("RGB")), cv2.COLOR_RGB2BGR)]
    if not isinstance(source, (str, Path)):
        raise SourceError(f"unsupported source type {type(source).__name__}")
    text = str(source)
    if text.lower().startswith(("http://", "https://")):
        from ..weights.hub import download

        return [download(text, subdir="sources", limit=limits.SOURCE_BYTES)]
    if any(c in text for c in "*?["):
        files = [p for p in expand_glob(text) if _is_media(p)]
        if not files:
            raise SourceError(f"{text}: the pattern matches no image or video")
        return files
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_media(p))
        if not files:
            raise SourceError(f"{path}: directory contains no images or videos")
        return files
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    if not path.is_file():  # reading a FIFO would wait for a writer forever
        raise SourceError(f"{path}: not a regular file (a FIFO, socket or device)")
    return [path]


def expand_glob(pattern: str) -> list[Path]:
    """The files `pattern` matches, sorted; `**` spans any depth. Symlinked folders are followed, each real folder
    once, so links that loop (a/b/up -> a) end the walk instead of repeating it without end."""
    if "**" not in pattern:  # a fixed depth: glob cannot loop
        return sorted(Path(p) for p in glob.glob(pattern) if os.path.isfile(p))
    head, _, tail = pattern.partition("**")
    tail = tail.lstrip("/" + os.sep) or "*"
    roots = glob.glob(head) if any(c in head for c in "*?[") else [head or "."]
    found, seen = set(), set()
    for root in roots:
        for folder, subfolders, names in os.walk(root, followlinks=True):
            real = os.path.realpath(folder)
            if real in seen:
                subfolders.clear()
                continue
            seen.add(real)
            for name in names:
                relative = os.path.relpath(os.path.join(folder, name), root)
                if fnmatch.fnmatch(relative, tail) or fnmatch.fnmatch(relative, f"*/{tail}"):
                    found.add(Path(folder) / name)
    return sorted(found)


def _is_media(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES


def _is_pil(obj: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(obj, Image.Image)


def _check_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """(3, H, W) or (B, 3, H, W) float in 0..1 -> (B, 3, H, W)."""
    batch = tensor[None] if tensor.ndim == 3 else tensor
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise SourceError(f"tensor source must be (B, 3, H, W) or (3, H, W), got {tuple(tensor.shape)}")
    if not batch.is_floating_point() or batch.min() < 0 or batch.max() > 1.0 + 1e-6:
        raise SourceError("tensor source must be float RGB in 0..1 (divide uint8 images by 255)")
    return batch


def _tensor_to_bgr(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) RGB 0..1 -> BGR uint8 (H, W, 3)."""
    rgb = (image.detach().float().cpu().permute(1, 2, 0) * 255).round().clamp(0, 255).byte().numpy()
    return np.ascontiguousarray(rgb[..., ::-1])


def _video_frames(path: Path) -> Iterator[Frame]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f"{path}: cannot open video")
    try:
        sizes = _frame_sizes(path)
        if len(sizes) > 1:
            shown = [f"{width}x{height}" for width, height in sizes[:4]] + ["..."] * (len(sizes) > 4)
            warnings.warn(f"{path}: the frame size changes mid-stream ({' -> '.join(shown)}); OpenCV stretches every "
                          f"frame to the first size, {shown[0]}", stacklevel=2)  # fmt: skip
        index, promised = 0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        while True:
            ok, image = capture.read()
            if not ok:
                break
            yield Frame(image, str(path), video_frame=index)
            index += 1
        if index == 0:
            raise SourceError(f"{path}: video has no readable frames")
        if index < promised:  # a truncated or damaged file: say what was read
            warnings.warn(f"{path}: read {index} of the {promised} frames its header promises (truncated or damaged)",
                          stacklevel=2)  # fmt: skip
    finally:
        capture.release()


def _frame_sizes(path: Path) -> list[tuple[int, int]]:
    """The (width, height) of a video's key frames, each change once, read by PyAV where it is installed (OpenCV
    stretches every frame to the first one's size, so its frames cannot show a change); [] without PyAV or where
    PyAV cannot read the file. Only key frames are decoded (a new size starts at one): a small part of the work."""
    try:
        import av
    except ImportError:
        return []
    sizes: list[tuple[int, int]] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return []
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"
            for frame in container.decode(stream):
                if not sizes or sizes[-1] != (frame.width, frame.height):
                    sizes.append((frame.width, frame.height))
    except (av.FFmpegError, ValueError):  # what PyAV cannot read, OpenCV may: its own errors follow
        pass
    return sizes
