"""CPU memory: keep freed memory in the process, so that each forward pass reuses the last one's activations; and
read what a process holds (`process_memory`, for the memory benchmarks and tests).

PyTorch takes CPU tensors from the C library's malloc. glibc hands large freed blocks straight back to the
kernel (blocks above a threshold are mmap'd, and the heap's top is trimmed once a few MB of it are free), so
every forward pass page-faults its activations back in: 6k-70k minor faults per 560x560 ViT prediction on our
2-core machines, 5-15% of its time. Raising both thresholds lets freed activations be reused, which is what
jemalloc and tcmalloc do by default and what PyTorch's CPU performance guide recommends preloading them for.

The setting is process-wide: it changes how much freed memory the process keeps (at most its peak), not what
it computes. Set DETR_TOOLKIT_KEEP_FREED_MEMORY=0 to leave malloc as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

MMAP_THRESHOLD = 64 << 20  # blocks below this come from the heap, whose memory is reused (glibc: 128 KiB-32 MiB)
TRIM_THRESHOLD = 512 << 20  # the heap gives memory back only when this much of its top is free (glibc: 128 KiB+)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
OPT_OUT = "DETR_TOOLKIT_KEEP_FREED_MEMORY"

_applied = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; -> whether they are raised.

    A no-op (False) off Linux, with another C library, or when DETR_TOOLKIT_KEEP_FREED_MEMORY=0.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT, "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied


def process_memory(pid: int | str = "self") -> dict[str, float]:
    """MiB a process holds, from Linux's /proc/PID/smaps_rollup: "rss" (resident) and "uss" (only it: private
    clean and dirty pages; what a forked worker has copied). OSError off Linux."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    kib = {key: int(value.split()[0]) for key, value in fields.items()}
    return {"rss": kib["Rss"] / 1024, "uss": (kib["Private_Clean"] + kib["Private_Dirty"]) / 1024}
