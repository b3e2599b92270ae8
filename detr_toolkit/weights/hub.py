"""Named official weights and downloads into a user cache (`$DETR_TOOLKIT_CACHE`, default ~/.cache/detr_toolkit)."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import CheckpointError, SourceError

RELEASES = "https://github.com/ultralytics/assets/releases/download/v8.4.0"
OFFICIAL_WEIGHTS = {name: f"{RELEASES}/{name}" for name in ("rtdetr-l.pt", "rtdetr-x.pt")}


def cache_dir() -> Path:
    return Path(os.environ.get("DETR_TOOLKIT_CACHE", Path.home() / ".cache" / "detr_toolkit"))


def download(url: str, subdir: str = "", timeout: float = 30.0) -> Path:
    """Fetch `url` into the cache (once); the file appears only when complete. SourceError when offline."""
    target = cache_dir() / subdir / (Path(unquote(urlparse(url).path)).name or "download")
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out)
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        raise SourceError(f"{url}: download failed ({reason}); put the file at {target} to use it offline") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def resolve_weights(name: str | Path) -> Path:
    """A weights path as given, or an official name (rtdetr-l.pt) found in or downloaded to the cache."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if str(name) in OFFICIAL_WEIGHTS:
        cached = cache_dir() / "weights" / str(name)
        if cached.is_file():
            return cached
        try:
            return download(OFFICIAL_WEIGHTS[str(name)], subdir="weights")
        except SourceError:
            raise CheckpointError(
                f"{name}: not found locally and the download from {OFFICIAL_WEIGHTS[str(name)]} failed "
                f"(offline?); download it elsewhere and put it at {cached}"
            ) from None
    raise CheckpointError(f"{path}: no such checkpoint file")
