"""Threads on a shared CPU (engine/threads.py) and progress lines for logs (engine/progress.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY_CONFIG

from detr_toolkit.engine import progress, threads
from detr_toolkit.engine.predictor import TorchInference
from detr_toolkit.nn import build_model

needs_two_cores = pytest.mark.skipif(threads.usable_cores() < 2, reason="thread counts to choose from need 2 cores")


@contextlib.contextmanager
def busy_cores():
    """One busy process per usable core while inside: another job's, not a child of this one (a shell starts it
    in the background and exits), as the children of a run are its own data loaders."""
    spin = f"'{sys.executable}' -c 'while True: pass' >/dev/null 2>&1 & echo $!"
    pids = [int(subprocess.check_output(["sh", "-c", spin])) for _ in range(threads.usable_cores())]
    try:
        time.sleep(0.5)
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    threads.set_threads(0)
    torch.set_num_threads(before)


def run_units(tuner: threads.ThreadTuner, seconds_per_item: dict[int, float], units: int) -> list[int]:
    """Units of work whose time depends on the thread count they run with; -> the counts they ran with."""
    counts = []
    for _ in range(units):
        with tuner.measure(items=2):
            counts.append(torch.get_num_threads())
            time.sleep(2 * seconds_per_item.get(torch.get_num_threads(), 0.02))
    return counts


@needs_two_cores
@pytest.mark.parametrize("fast", [1, 2])
def test_auto_keeps_the_count_that_runs_fastest(fast, monkeypatch):
    monkeypatch.setattr(threads, "candidates", lambda: [1, 2])
    threads.set_threads(0)
    tuner = threads.ThreadTuner()
    counts = run_units(tuner, {fast: 0.004, 3 - fast: 0.012}, units=12)
    assert set(counts[1:4]) == {1, 2}  # both timed, interleaved, after the first (warm-up) unit
    assert counts[-4:] == [fast] * 4 and tuner.best == fast
    assert counts.count(3 - fast) < 1 + threads.ROUNDS  # a clearly slower count is not timed the whole round


@needs_two_cores
def test_auto_times_the_counts_again_when_the_load_may_have_changed(monkeypatch):
    monkeypatch.setattr(threads, "candidates", lambda: [1, 2])
    monkeypatch.setattr(threads, "RETUNE_SECONDS", 0.2)
    threads.set_threads(0)
    tuner = threads.ThreadTuner()
    run_units(tuner, {1: 0.002, 2: 0.01}, units=8)
    assert tuner.best == 1
    time.sleep(0.25)  # the load changed: now 2 threads are faster
    counts = run_units(tuner, {1: 0.01, 2: 0.002}, units=10)
    assert tuner.best == 2 and counts[-3:] == [2, 2, 2]


def test_a_fixed_count_is_kept():
    threads.set_threads(1)
    assert threads.describe_threads().startswith("threads: 1 of")
    tuner = threads.ThreadTuner()
    assert set(run_units(tuner, {1: 0.01, 2: 0.0001}, units=8)) == {1}


@needs_two_cores
def test_busy_cores_are_not_counted_idle():
    with busy_cores():
        assert threads.idle_cores() == 1


@needs_two_cores
def test_under_load_auto_inference_runs_on_fewer_threads_than_cores():
    """One busy process per core: threads that meet at a barrier after every op wait for descheduled ones, so the
    tuner, timing real inference batches of the demo-size model, settles below all cores."""
    threads.set_threads(0)
    torch.manual_seed(0)
    inference = TorchInference(build_model(TINY_CONFIG), torch.device("cpu"))
    images = torch.rand(4, 3, 64, 64)
    with busy_cores():
        for _ in range(20):
            inference(images)
    assert inference.threads.best < threads.usable_cores()


def test_log_progress_prints_a_line_per_interval(capsys):
    log = progress.LogProgress("epoch 1", total=10, every=0.0)
    log.update(4, 32, loss=1.5)
    line = capsys.readouterr().out
    assert line.startswith("epoch 1: step 4/10") and "img/s" in line and "loss 1.5" in line and "s left" in line
    quiet = progress.LogProgress("epoch 1", total=10, every=60.0)
    quiet.update(5, 40, loss=1.0)
    assert capsys.readouterr().out == ""


def test_heartbeat_speaks_during_a_long_call(capsys):
    with progress.heartbeat("exporting x.onnx", every=0.05):
        time.sleep(0.3)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 3 and all(line.startswith("exporting x.onnx: still running") for line in lines)
    time.sleep(0.1)
    assert capsys.readouterr().out == ""  # stopped with the call


@pytest.mark.parametrize("setting", [0, 1])
def test_a_call_leaves_torch_threads_as_the_caller_had_them(tiny_weights, setting):
    """predict and val run on the setting's (or the tuner's) threads, then give the caller's count back: a peer or the
    caller's own work run after them on what was asked for (the tuner's last count once leaked into a parity test's
    peer)."""
    from detr_toolkit import RTDETR

    torch.set_num_threads(threads.usable_cores())
    model = RTDETR(tiny_weights)
    stream = model.predict([torch.rand(3, 64, 64) for _ in range(6)], stream=True, threads=setting, verbose=False)
    next(stream)
    if setting:
        assert torch.get_num_threads() == setting  # in force while the stream runs
    list(stream)
    assert torch.get_num_threads() == threads.usable_cores()
    assert threads.describe_threads().startswith("threads: auto")  # the setting back too
