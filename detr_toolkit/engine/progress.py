"""Progress for logs: where the output is not a terminal (a log file, a CI job, a notebook's captured stream) a
progress bar draws nothing useful, so long work prints a line at least every PROGRESS_SECONDS instead."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

PROGRESS_SECONDS = 30.0


def on_terminal() -> bool:
    """Whether progress bars can draw (standard error is a terminal)."""
    return sys.stderr.isatty()


class LogProgress:
    """Lines about a loop of `total` steps, at most one per `every` seconds; `update` after each step."""

    def __init__(self, what: str, total: int, every: float | None = None, enabled: bool = True):
        self.what, self.total, self.enabled = what, total, enabled
        self.every = PROGRESS_SECONDS if every is None else every
        self.started = self.last = time.monotonic()

    def update(self, done: int, images: int, **values: float) -> None:
        """`done` steps (`images` images) finished so far; `values` (losses) go into the line."""
        now = time.monotonic()
        if not self.enabled or now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.started
        left = elapsed / max(done, 1) * (self.total - done)
        shown = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
        print(f"{self.what}: step {done}/{self.total}  {images / elapsed:.1f} img/s  {shown}  {left:.0f} s left",
              flush=True)  # fmt: skip


@contextmanager
def heartbeat(what: str, every: float | None = None) -> Iterator[None]:
    """For one long call that reports nothing (an export, a calibration): a line every `every` seconds (default
    PROGRESS_SECONDS) while it runs, from a background thread."""
    every = PROGRESS_SECONDS if every is None else every
    done = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not done.wait(every):
            print(f"{what}: still running ({time.monotonic() - started:.0f} s)", flush=True)

    thread = threading.Thread(target=beat, name="progress-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
