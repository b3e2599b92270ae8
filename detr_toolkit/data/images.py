"""Images in the one layout the predictor takes, BGR uint8 (H, W, 3) like OpenCV and ultralytics: reading files and
arrays into it, writing it to files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .. import limits
from ..errors import LimitError, OutputError, SourceError
from ..files import write_file

IMAGE_SUFFIXES = {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic"}
VIDEO_SUFFIXES = {".asf", ".avi", ".gif", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts", ".wmv", ".webm"}


@contextmanager
def _pil_bomb_check_off() -> Iterator[None]:
    """PIL refuses headers above its own pixel threshold; ours (limits.IMAGE_PIXELS, which the user may raise) is
    checked instead, for the moment of reading a header."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def header_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the image file's header (EXIF rotation applied), without decoding the pixels; None
    when PIL does not know the format. LimitError when the image has more pixels than limits.IMAGE_PIXELS."""
    try:
        with _pil_bomb_check_off(), Image.open(path) as image:
            width, height = image.size
            limits.IMAGE_PIXELS.check(width * height, f"{path}: a {width}x{height} image")
            orientation = _orientation(image)
    except LimitError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    except Exception:  # noqa: BLE001 (ultralytics, once imported, patches PIL to pip-install plugins here)
        return None
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1: upright) from the header: PIL's `getexif` would decode a whole PNG to look for a
    late eXIf chunk, so a PNG's is read only from the chunks before its pixels."""
    if image.format == "PNG":
        exif = Image.Exif()
        if "exif" in image.info:
            exif.load(image.info["exif"])
        return exif.get(0x0112, 1)
    return image.getexif().get(0x0112, 1)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8 (H, W, 3); SourceError if missing or unreadable, LimitError if its header
    promises more pixels than limits.IMAGE_PIXELS (checked before decoding).

    OpenCV applies the EXIF orientation and turns gray and alpha images into BGR, as ultralytics reads them;
    16-bit and float images keep their depth until `to_bgr_uint8` scales them by their range.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    header_size(path)
    data = np.fromfile(path, dtype=np.uint8)  # fromfile + imdecode copes with non-ASCII paths
    if data.size == 0:
        raise SourceError(f"{path}: empty file")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error as error:  # OpenCV's own checks: its pixel limit, for formats PIL cannot read (see __init__)
        if "CV_IO_MAX_IMAGE_PIXELS" in str(error):
            raise LimitError(f"{path}: {limits.IMAGE_PIXELS.unit} above the limit of {limits.IMAGE_PIXELS.value:,} "
                             f"(set {limits.IMAGE_PIXELS.variable} to raise it)") from None  # fmt: skip
        raise SourceError(f"{path}: not a readable image ({str(error).strip().splitlines()[-1]})") from None
    if image is None:
        raise SourceError(f"{path}: not a readable image (corrupt or unsupported format)")
    return to_bgr_uint8(image, str(path))


def _to_uint8(image: np.ndarray, name: str) -> np.ndarray:
    """Pixels of any numeric type -> uint8, by their range and depth:

    - floats: 0..1 when no value is above 1, else 0..255 (NaN counts as 0);
    - integers wider than 8 bits: shifted by the bits their largest value needs beyond 8, so 8-bit data stored in
      16 bits stays as it is, 12-bit sensor data (0..4095) fills 0..255, and full-range 16-bit data is >> 8.
    """
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if image.dtype.kind == "f":  # in place on one float32 copy: a large image is not copied again per step
        image = np.nan_to_num(image.astype(np.float32), copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        if image.max(initial=0.0) <= 1.0:
            image *= 255.0
        return np.clip(image, 0, 255, out=image).round(out=image).astype(np.uint8)
    if image.dtype.kind in "iu":  # in the array's own type: no wider copies of a large 16-bit image
        if image.dtype.kind == "i":
            image = np.clip(image, 0, None)
        shift = max(int(image.max(initial=0)).bit_length() - 8, 0)
        return (image >> shift).astype(np.uint8)
    raise SourceError(f"{name}: unsupported pixel type {image.dtype}")


def to_bgr_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """An array -> BGR uint8 (H, W, 3): gray (H, W) or (H, W, 1), BGR, BGRA; any numeric pixel type, scaled by its
    range and depth (see `_to_uint8`)."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)) or 0 in image.shape:
        raise SourceError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {image.shape}")
    limits.IMAGE_PIXELS.check(image.shape[0] * image.shape[1], f"{name}: a {image.shape[1]}x{image.shape[0]} image")
    image = _to_uint8(image, name)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Encode a BGR uint8 image in the format of `path`'s extension and write it atomically; OutputError naming
    the file when OpenCV cannot write that format or the file cannot be written."""
    path = Path(path)
    if not path.suffix.isascii() or not cv2.haveImageWriter(f"image{path.suffix}"):
        raise OutputError(f"{path}: cannot write images of this format (use .jpg, .png, .bmp, .tif or .webp)")
    ok, encoded = cv2.imencode(path.suffix, image)
    if not ok:
        raise OutputError(f"{path}: OpenCV could not encode the image in this format")
    return write_file(path, encoded.tobytes())
