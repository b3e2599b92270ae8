"""Keep the calling thread's alternate signal stack across a call into native code that replaces it.

OpenVINO's CPU plugin (2026.4) points the calling thread's alternate signal stack at memory of its own when it
compiles a model, and puts back the stack it found only when the plugin is unloaded, while that memory is freed
with the compiled model. Python runs its signal handlers on the alternate stack (Ctrl-C's SIGINT, the SIGCHLD of
a DataLoader worker that exits), so once an OpenVINO model is freed the next signal kills the process with SIGSEGV
(found in the test suite: a training run after the OpenVINO tests). `kept_signal_stack()` puts the thread's own
stack back after the call; OpenVINO computes the same without its stack (it serves only its own crash handler).
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager

SS_DISABLE = 2  # from the C library's signal.h: the thread has no alternate stack


class SignalStack(ctypes.Structure):
    """The C library's stack_t."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.cache
def _sigaltstack():
    """The C library's sigaltstack(new, old), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).sigaltstack
    except (OSError, AttributeError):
        return None


def current_signal_stack() -> SignalStack | None:
    """The calling thread's alternate signal stack (None where it cannot be read)."""
    sigaltstack = _sigaltstack()
    if sigaltstack is None:
        return None
    stack = SignalStack()
    sigaltstack(None, ctypes.byref(stack))
    return stack


@contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Run the block, then give the calling thread back the alternate signal stack it had before it."""
    own = current_signal_stack()
    try:
        yield
    finally:
        if own is not None:
            own.ss_flags &= SS_DISABLE  # (the flags a thread reads may hold SS_ONSTACK, which it may not set)
            _sigaltstack()(ctypes.byref(own), None)
