"""CPU threads for training, validation and prediction on a machine that others share.

PyTorch's intra-op threads (OpenMP) meet at a barrier after every parallel op. When another process holds one of
the cores, the thread that must run there is descheduled and every op waits for its turn, thousands of times a
step: on 2 cores with one busy process per core, training the demo model ran at 10 images/s on 2 threads against
25 on 1 thread; idle, 2 threads ran at 57 against 44 on 1 (AMD EPYC, `python scripts/bench_threads.py`). No fixed
count fits both, and OpenMP's passive wait policy (threads sleep at barriers) rescues the loaded case (22 images/s)
only by losing the idle one (25): the count has to follow the load.

`threads=0` (auto, the default): a loop of repeated work (training steps, val or predict batches) starts with as
many threads as there are idle cores now (the CPU time others used over 0.1 s, from /proc/stat), then
times each candidate count (1, half and all cores) that the idle cores admit, interleaved so that a change of load
affects all alike, keeps the fastest per image, and looks again every RETUNE_SECONDS so that a load that comes or
goes is followed. Counts above the idle cores are not timed: under load that one unit of rtdetr-l at 2 threads
took 6 s against 2 at 1 thread, a quarter of a 12-image stream's time. `threads=N` runs N threads throughout (what
bit-for-bit repeatable training needs: sums split over threads round differently).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

# Each candidate thread count is timed on this many units of work per tuning round.
ROUNDS = 3
# Seconds of work between tuning rounds (the load on a shared machine changes on this scale).
RETUNE_SECONDS = 60.0
# A count whose first unit takes this many times the best count's time per image is not timed again this round
# (under load the slow count is 2x slower; timing it twice more would cost more than the round can win back).
CLEARLY_SLOWER = 1.5

_setting = 0  # the `threads=` setting in force: 0 auto, else a fixed count


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, as `taskset` sets it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def idle_cores(seconds: float = 0.1) -> int:
    """Cores of this process's affinity not taken by other processes (at least 1): the CPU time those cores spent
    busy over `seconds` (/proc/stat), less this process's and its data-loading children's, rounded to cores; without
    /proc, every usable core."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cores or not Path("/proc/stat").is_file():
        return usable_cores()
    busy, own = _busy_ticks(cores), _own_ticks()
    time.sleep(seconds)
    others = (_busy_ticks(cores) - busy) - (_own_ticks() - own)
    busy_cores = others / os.sysconf("SC_CLK_TCK") / seconds
    return max(1, len(cores) - round(busy_cores))


def _busy_ticks(cores: list[int]) -> int:
    """Clock ticks the CPUs `cores` spent neither idle nor waiting for I/O since boot."""
    busy = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            busy += sum(map(int, ticks[:8])) - int(ticks[3]) - int(ticks[4])  # less idle and iowait
    return busy


def _own_ticks() -> int:
    """Clock ticks of CPU time this process and its children (data loaders) have used."""
    return sum(_process_ticks(pid) for pid in [os.getpid(), *_children()])


def _children() -> list[int]:
    """This process's child processes (data-loader workers)."""
    pids = []
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        try:
            pids += [int(pid) for pid in children.read_text().split()]
        except OSError:
            pass
    return pids


def _process_ticks(pid: int) -> int:
    """Clock ticks of CPU time process `pid` has used."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):  # the process ended meanwhile
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


def set_threads(threads: int) -> None:
    """Put the `threads=` setting in force for this process (0: auto)."""
    global _setting
    _setting = threads
    if threads:
        torch.set_num_threads(threads)


@contextmanager
def threads_for_call(threads: int) -> Iterator[None]:
    """The `threads=` setting in force for one call (predict, val, train), then the caller's setting and torch thread
    count back: a library call leaves torch as it found it (the tuner's last count would otherwise stay, for the
    caller's own work too)."""
    global _setting
    setting, count = _setting, torch.get_num_threads()
    set_threads(threads)
    try:
        yield
    finally:
        _setting = setting
        if torch.get_num_threads() != count:
            torch.set_num_threads(count)


def describe_threads() -> str:
    """A line saying what the setting in force does (auto mode samples the load for it: 0.1 s)."""
    cores = usable_cores()
    if _setting:
        return f"threads: {_setting} of {cores} cores"
    counts = " or ".join(map(str, candidates()))
    return f"threads: auto, {counts} of {cores} cores, timed while running ({idle_cores()} idle now)"


def candidates() -> list[int]:
    """The thread counts auto mode chooses from: 1, half and all of the usable cores."""
    cores = usable_cores()
    return sorted({1, max(cores // 2, 1), cores})


class ThreadTuner:
    """The thread count of one loop of repeated work (one per loop: a training step and a val batch differ).

    Call `start()` before the loop's first unit and `tick(items)` after each (or wrap a unit in `measure(items)`);
    the count for the next unit is set then. With a fixed `threads=` it just sets that count.
    """

    def __init__(self) -> None:
        self.best = 0  # the count chosen (0: none yet, the idle cores at the first unit)
        self.plan: list[int] = []  # counts still to time in this round, in order
        self.per_item: dict[int, list[float]] = {}  # seconds per item of each timed count, this round
        self.retune_at = -1.0  # time.monotonic() of the next round (-1: after the first unit, which warms up)
        self.running = 0  # the count the current unit runs with
        self.since = 0.0

    def prepare(self) -> None:
        """Set the count for the work that readies the loop (building a model): the fixed one, or auto's first
        guess, the idle cores (left at the default, that work ran on every core however busy)."""
        self._next_count()

    def start(self) -> None:
        self.running = self._next_count()
        self.since = time.perf_counter()

    def tick(self, items: int) -> None:
        """The unit that just ended processed `items` images: record its time, set the next unit's count."""
        now = time.perf_counter()
        if self.plan and self.plan[0] == self.running:
            self.plan.pop(0)
            self.per_item.setdefault(self.running, []).append((now - self.since) / max(items, 1))
            self._drop_clearly_slower()
            if not self.plan:
                self.best = min(self.per_item, key=lambda count: statistics.median(self.per_item[count]))
                self.retune_at = time.monotonic() + RETUNE_SECONDS
        elif self.retune_at < 0:  # the first unit: tuning starts after it
            self.retune_at = time.monotonic()
        self.running = self._next_count()
        self.since = time.perf_counter()

    def _drop_clearly_slower(self) -> None:
        """Leave out of the rest of the round each count timed CLEARLY_SLOWER than the best so far."""
        fastest = min(statistics.median(times) for times in self.per_item.values())
        slow = {c for c, times in self.per_item.items() if statistics.median(times) > CLEARLY_SLOWER * fastest}
        self.plan = [count for count in self.plan if count not in slow]

    @contextmanager
    def measure(self, items: int) -> Iterator[None]:
        """Run one unit of `items` images (its thread count set first), timed."""
        self.start()
        yield
        self.tick(items)

    def _next_count(self) -> int:
        if _setting:
            return self._use(_setting)
        if not self.best:
            self.best = idle_cores()
        if not self.plan and 0 <= self.retune_at <= time.monotonic():
            idle = idle_cores()
            counts = [count for count in candidates() if count <= idle]
            if len(counts) > 1:
                self.plan, self.per_item = counts * ROUNDS, {}
            else:
                self.best = counts[0]
            self.retune_at = time.monotonic() + RETUNE_SECONDS
        return self._use(self.plan[0] if self.plan else self.best)

    @staticmethod
    def _use(count: int) -> int:
        if torch.get_num_threads() != count:
            torch.set_num_threads(count)
        return count
