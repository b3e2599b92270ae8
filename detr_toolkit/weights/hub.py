"""Named official weights and downloads into a user cache (`$DETR_TOOLKIT_CACHE`, default ~/.cache/detr_toolkit)."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..config import packaged_configs
from ..errors import CheckpointError, OutputError, SourceError
from ..files import atomic_file

RELEASES = "https://github.com/ultralytics/assets/releases/download/v8.4.0"
OFFICIAL_WEIGHTS = {name: f"{RELEASES}/{name}" for name in ("rtdetr-l.pt", "rtdetr-x.pt")}


def cache_dir() -> Path:
    return Path(os.environ.get("DETR_TOOLKIT_CACHE", Path.home() / ".cache" / "detr_toolkit"))


def download(url: str, subdir: str = "", timeout: float = 30.0) -> Path:
    """Fetch `url` into the cache (once); the file appears only when complete. SourceError when offline."""
    target = cache_dir() / subdir / (Path(unquote(urlparse(url).path)).name or "download")
    if target.is_file():
        return target
    try:
        with (
            atomic_file(target) as tmp,
            open(tmp, "wb") as out,
            urllib.request.urlopen(url, timeout=timeout) as response,
        ):
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        raise SourceError(f"{url}: download failed ({reason}); put the file at {target} to use it offline") from None
    except OSError as error:
        raise OutputError(f"{target}: cannot write the download ({error.strerror or error})") from None
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
    hint = f" (the shipped config is {path.name}.yaml)" if (packaged_configs() / f"{path.name}.yaml").is_file() else ""
    raise CheckpointError(f"{path}: no such checkpoint file{hint}")
