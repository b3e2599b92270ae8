"""What a benchmark ran on, for its printout: the CPU, its features that change the figures, and its load; and a
competing load to measure under (a user's CPU is shared with a browser, an IDE, another job)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# CPU features that change the figures: bfloat16 and int8 matrix units and instructions.
FEATURES = ("avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "avx_vnni")


def cpu_name() -> str:
    """The CPU's model name, and which of FEATURES it has."""
    name, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    present = [f for f in FEATURES if f in flags]
    return f"{name}, {os.cpu_count()} cores" + (f" ({', '.join(present)})" if present else "")


def busy_processes(count: int) -> list[subprocess.Popen]:
    """`count` processes that each keep one core busy until killed (see `stop`)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
        process.wait()


def load_average(label: str) -> tuple[float, float, float]:
    load = os.getloadavg()
    print(f"load average {label}: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if label.startswith("before") and load[0] > 0.5:
        print(f"WARNING: 1-minute load {load[0]:.2f} > 0.5 before {label[7:]}: the CPU is shared, timings and the "
              "epochs done within the budget will suffer")  # fmt: skip
    return load


def settle(limit: float) -> None:
    """Wait, at most `limit` seconds, for the 1-minute load to fall below 0.5: it decays with a time constant of a
    minute, so after one side it still counts that side's run for a while."""
    started = time.monotonic()
    while os.getloadavg()[0] > 0.5 and time.monotonic() - started < limit:
        time.sleep(2)
    print(f"waited {time.monotonic() - started:.0f} s for the CPU to settle (1-minute load {os.getloadavg()[0]:.2f})")
