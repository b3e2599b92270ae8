"""Keeping freed CPU memory: the page faults that re-allocated activations cost are gone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # every test here takes seconds (see the README's test commands)

# Sums of 48 MB tensors, as a forward pass allocates and frees activations; prints the minor page faults of a step.
FAULTS_PER_STEP = """
import resource, torch
from detr_toolkit.engine.cpu_memory import keep_freed_memory
print(keep_freed_memory())
x = torch.ones(12 << 20)
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x + x + x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults))  # the steady state, once the heap has grown to the working size
"""


def faults_per_step(keep: bool) -> tuple[bool, float]:
    env = {**os.environ, "DETR_TOOLKIT_KEEP_FREED_MEMORY": "1" if keep else "0"}
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is what the setting tunes")
def test_freed_activations_are_reused_without_page_faults():
    applied, kept = faults_per_step(keep=True)
    opted_out, default = faults_per_step(keep=False)
    assert applied and not opted_out
    assert default > 10_000  # glibc maps and unmaps each 48 MB block: 2 x 12288 pages a step
    assert kept < default / 20, (kept, default)  # measured: 0 vs 24576
