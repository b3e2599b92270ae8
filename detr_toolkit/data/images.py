"""Images in the one layout the predictor takes, BGR uint8 (H, W, 3) like OpenCV and ultralytics: reading files and
arrays into it, writing it to files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import OutputError, SourceError
from ..files import write_file

IMAGE_SUFFIXES = {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic"}
VIDEO_SUFFIXES = {".asf", ".avi", ".gif", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts", ".wmv", ".webm"}


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8 (H, W, 3); SourceError if missing or unreadable.

    OpenCV's IMREAD_COLOR applies the EXIF orientation and turns gray, alpha and 16-bit images into
    8-bit BGR, as ultralytics reads them.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    data = np.fromfile(path, dtype=np.uint8)  # fromfile + imdecode copes with non-ASCII paths
    if data.size == 0:
        raise SourceError(f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{path}: not a readable image (corrupt or unsupported format)")
    return image


def to_bgr_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """An in-memory array -> BGR uint8 (H, W, 3): gray (H, W) or (H, W, 1), BGR, BGRA; 16-bit or float 0..1."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)) or 0 in image.shape:
        raise SourceError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {image.shape}")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype.kind == "f":
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise SourceError(f"{name}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Encode a BGR uint8 image in the format of `path`'s extension and write it atomically; OutputError naming
    the file when OpenCV cannot write that format or the file cannot be written."""
    path = Path(path)
    if not path.suffix or not cv2.haveImageWriter(str(path)):
        raise OutputError(f"{path}: cannot write images of this format (use .jpg, .png, .bmp, .tif or .webp)")
    ok, encoded = cv2.imencode(path.suffix, image)
    if not ok:
        raise OutputError(f"{path}: OpenCV could not encode the image in this format")
    return write_file(path, encoded.tobytes())
