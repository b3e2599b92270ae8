"""Named official weights and downloads into a user cache (`$DETR_TOOLKIT_CACHE`, default ~/.cache/detr_toolkit)."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

from .. import limits
from ..config import packaged_configs
from ..errors import CheckpointError, OutputError, SourceError
from ..files import atomic_file

CHUNK = 1 << 16  # bytes read at a time (or fewer, as they arrive)
STALL_SECONDS, MIN_RATE = 30.0, 4096  # a download slower than MIN_RATE bytes/s after STALL_SECONDS is given up
ULTRALYTICS = "https://github.com/ultralytics/assets/releases/download/v8.4.0"
RTDETR = "https://github.com/lyuwenyu/storage/releases/download"  # lyuwenyu/RT-DETR's releases (v1 and v2)
DFINE = "https://github.com/Peterande/storage/releases/download/dfinev1.0"  # Peterande/D-FINE's COCO releases
DEIMV2 = "https://huggingface.co/Intellindust/DEIMv2_{}_COCO/resolve/main/model.safetensors"  # the official repos
ROBOFLOW = "https://storage.googleapis.com/rfdetr"  # roboflow/rf-detr's COCO checkpoints
# roboflow's names for its files, under which its rfdetr package saves them too (several URLs end alike).
ROBOFLOW_WEIGHTS = {
    "rf-detr-nano.pth": f"{ROBOFLOW}/nano_coco/checkpoint_best_regular.pth",
    "rf-detr-small.pth": f"{ROBOFLOW}/small_coco/checkpoint_best_regular.pth",
    "rf-detr-medium.pth": f"{ROBOFLOW}/medium_coco/checkpoint_best_regular.pth",
    "rf-detr-base.pth": f"{ROBOFLOW}/rf-detr-base-coco.pth",
    "rf-detr-base-2.pth": f"{ROBOFLOW}/rf-detr-base-2.pth",
}
RTDETR_BACKBONES = (  # lyuwenyu/RT-DETR's ResNet-vd files
    "ResNet18_vd_pretrained_from_paddle.pth",
    "ResNet34_vd_pretrained_from_paddle.pth",
    "ResNet50_vd_ssld_v2_pretrained_from_paddle.pth",
    "ResNet101_vd_ssld_pretrained_from_paddle.pth",
)
# Our name -> where the official file is. The cached copy keeps the official file name: it says what it holds
# (RT-DETRv2's "dsp" files are read with discrete sampling); a HuggingFace repository's file is named after it.
OFFICIAL_WEIGHTS = {
    "rtdetr-l.pt": f"{ULTRALYTICS}/rtdetr-l.pt",
    "rtdetr-x.pt": f"{ULTRALYTICS}/rtdetr-x.pt",
    "rtdetr-r18.pth": f"{RTDETR}/v0.1/rtdetr_r18vd_dec3_6x_coco_from_paddle.pth",
    "rtdetr-r34.pth": f"{RTDETR}/v0.1/rtdetr_r34vd_dec4_6x_coco_from_paddle.pth",
    "rtdetr-r50.pth": f"{RTDETR}/v0.1/rtdetr_r50vd_6x_coco_from_paddle.pth",
    "rtdetr-r101.pth": f"{RTDETR}/v0.1/rtdetr_r101vd_6x_coco_from_paddle.pth",
    "rtdetrv2-s.pth": f"{RTDETR}/v0.2/rtdetrv2_r18vd_120e_coco_rerun_48.1.pth",
    "rtdetrv2-m.pth": f"{RTDETR}/v0.1/rtdetrv2_r50vd_m_7x_coco_ema.pth",
    "rtdetrv2-l.pth": f"{RTDETR}/v0.1/rtdetrv2_r50vd_6x_coco_ema.pth",
    "rtdetrv2-x.pth": f"{RTDETR}/v0.1/rtdetrv2_r101vd_6x_coco_from_paddle.pth",
    "rtdetrv2-s-dsp.pth": f"{RTDETR}/v0.1/rtdetrv2_r18vd_dsp_3x_coco.pth",
    "rtdetrv2-m-dsp.pth": f"{RTDETR}/v0.1/rtdetrv2_r50vd_m_dsp_3x_coco.pth",
    "rtdetrv2-l-dsp.pth": f"{RTDETR}/v0.1/rtdetrv2_r50vd_dsp_1x_coco.pth",
    **{f"dfine-{size}.pth": f"{DFINE}/dfine_{size}_coco.pth" for size in "nsmlx"},
    **{
        f"deimv2-{size.lower()}.safetensors": DEIMV2.format(f"HGNetv2_{size}")
        for size in ("ATTO", "FEMTO", "PICO", "N")
    },
    **{f"deimv2-{size.lower()}.safetensors": DEIMV2.format(f"DINOv3_{size}") for size in "SMLX"},
    **ROBOFLOW_WEIGHTS,
    # ImageNet backbones the official recipes start from (PaddlePaddle's, converted by their authors), by file name
    # (a model config's `backbone: {weights: ...}`; see weights/backbone.py).
    **{name: f"{RTDETR}/v0.1/{name}" for name in RTDETR_BACKBONES},
    **{f"PPHGNetV2_B{size}_stage1.pth": f"{DFINE}/PPHGNetV2_B{size}_stage1.pth" for size in range(7)},
}


def cached_name(url: str) -> str:
    """The file name a download keeps: the URL's, or for a HuggingFace repository's file, the repository's name
    with the file's suffix (every DEIMv2 repository holds a `model.safetensors`)."""
    parts = Path(unquote(urlparse(url).path)).parts  # (..., repo, 'resolve', revision, file) on the hub
    if len(parts) >= 5 and parts[-3] == "resolve":
        return parts[-4] + Path(parts[-1]).suffix
    return parts[-1] if len(parts) > 1 else "download"


def cache_dir() -> Path:
    return Path(os.environ.get("DETR_TOOLKIT_CACHE", Path.home() / ".cache" / "detr_toolkit"))


def official_file(name: str) -> Path:
    """Where the cache keeps OFFICIAL_WEIGHTS[name]: under the download's name (cached_name), roboflow's files
    under roboflow's names."""
    return cache_dir() / "weights" / (name if name in ROBOFLOW_WEIGHTS else cached_name(OFFICIAL_WEIGHTS[name]))


def download(url: str, subdir: str = "", timeout: float = 30.0, name: str | None = None,
             limit: limits.Limit = limits.DOWNLOAD_BYTES) -> Path:  # fmt: skip
    """Fetch `url` into the cache (once) as `name` (default: cached_name); the file appears only when complete.
    SourceError when offline, when the server stalls (below MIN_RATE after STALL_SECONDS), LimitError beyond
    `limit` bytes (checked against the announced length first)."""
    target = cache_dir() / subdir / (name or cached_name(url))
    if target.is_file():
        return target
    try:
        with (
            atomic_file(target) as tmp,
            open(tmp, "wb") as out,
            urllib.request.urlopen(url, timeout=timeout) as response,
        ):
            _copy(response, out, url, limit)
    except (urllib.error.URLError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        raise SourceError(f"{url}: download failed ({reason}); put the file at {target} to use it offline") from None
    except OSError as error:
        raise OutputError(f"{target}: cannot write the download ({error.strerror or error})") from None
    return target


def _copy(response: Any, out: BinaryIO, url: str, limit: limits.Limit) -> None:
    """The response's body into `out`, a chunk as it arrives, within `limit` and above MIN_RATE."""
    announced = str(response.headers.get("Content-Length", ""))
    if announced.isdigit():
        limit.check(int(announced), f"{url}: the download")
    started, size = time.monotonic(), 0
    while chunk := response.read1(CHUNK):
        size += len(chunk)
        limit.check(size, f"{url}: the download")
        elapsed = time.monotonic() - started
        if elapsed > STALL_SECONDS and size / elapsed < MIN_RATE:
            raise SourceError(f"{url}: the download stalls ({size / elapsed / 1024:.1f} KB/s after {elapsed:.0f} s)")
        out.write(chunk)


def resolve_weights(name: str | Path) -> Path:
    """A weights path as given, or an official name found in or downloaded to the cache: ours (rtdetr-l.pt,
    rtdetrv2-s.pth: OFFICIAL_WEIGHTS) or the official file's (rtdetrv2_r18vd_120e_coco_rerun_48.1.pth)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    by_file_name = {official_file(ours).name: ours for ours in OFFICIAL_WEIGHTS}
    name = by_file_name.get(str(name), str(name))
    if name in OFFICIAL_WEIGHTS:
        url, cached = OFFICIAL_WEIGHTS[name], official_file(name)
        if cached.is_file():
            return cached
        try:
            return download(url, subdir="weights", name=cached.name)
        except SourceError:
            raise CheckpointError(
                f"{name}: not found locally and the download from {url} failed "
                f"(offline?); download it elsewhere and put it at {cached}"
            ) from None
    hint = f" (the shipped config is {path.name}.yaml)" if (packaged_configs() / f"{path.name}.yaml").is_file() else ""
    raise CheckpointError(f"{path}: no such checkpoint file{hint}")
