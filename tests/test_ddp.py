"""Distributed training on CPUs (gloo): 2 ranks, each on its share of a global batch, compute the losses and
gradients one process computes on the whole batch, for every family's loss (RT-DETR's varifocal, D-FINE's FGL and
DDF, DEIMv2's MAL with union matching, LW-DETR's IA-BCE over query groups), also where a rank's share holds no
object; and a training on two "nodes" (torchrun --nnodes 2, c10d rendezvous on localhost) trains and resumes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import rows
from ddp_case import FAMILIES, step, step_inputs

TESTS = Path(__file__).resolve().parent
RANKS = 2

RANK_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    sys.path.insert(0, sys.argv[1])
    from ddp_case import FAMILIES, step, step_inputs

    out = Path(sys.argv[2])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    for family in FAMILIES:
        model, criterion, images, targets = step_inputs(family, out)
        ddp = DistributedDataParallel(model)
        losses = step(ddp, criterion, images[rank::world], targets[rank::world])
        for value in losses.values():
            dist.all_reduce(value)  # the ranks' mean: what DDP's averaged gradients descend
        if rank == 0:
            grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
            torch.save({"losses": {k: v / world for k, v in losses.items()}, "grads": grads}, out / f"{family}.pt")
    dist.destroy_process_group()
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_compute_one_process_losses_and_gradients(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(RANKS), "--master_port",
               str(free_port()), str(script), str(TESTS), str(tmp_path)]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    for family in FAMILIES:
        distributed = torch.load(tmp_path / f"{family}.pt", weights_only=True)
        model, criterion, images, targets = step_inputs(family, tmp_path)
        alone = step(model, criterion, images, targets)
        assert set(distributed["losses"]) == set(alone), family
        assert alone["loss_class"] > 0 and alone["loss_bbox"] > 0
        for name, value in alone.items():
            assert distributed["losses"][name] == pytest.approx(float(value), rel=1e-5, abs=1e-7), (family, name)
        grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
        assert set(distributed["grads"]) == set(grads), family
        largest = max(g.abs().max() for g in grads.values())
        for name, grad in grads.items():
            assert (distributed["grads"][name] - grad).abs().max() <= 1e-5 * largest, (family, name)


@pytest.mark.slow
def test_two_nodes_train_and_resume(shapes, tmp_path):
    """Two torchrun agents, a node each (`--nnodes 2`, c10d rendezvous on localhost), one process per node: an
    epoch, then the run resumed by both for a second; the ranks end in sync and rank 0 alone writes the rows."""
    data, config = shapes

    def on_two_nodes(*args) -> str:
        endpoint = f"localhost:{free_port()}"
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                   "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", endpoint, "-m",
                   "detr_toolkit.cli", "train", *map(str, args)]  # fmt: skip
        nodes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
        outputs = [node.communicate(timeout=600) for node in nodes]
        for node, (_, errors) in zip(nodes, outputs):
            assert node.returncode == 0, errors[-3000:]
        return "".join(out for out, _ in outputs)

    settings = ["batch=4", "imgsz=64", "workers=0", "lr=0.0005", "plots=false", f"project={tmp_path}", "name=nodes"]
    on_two_nodes("--model", config, "--data", data, "epochs=1", *settings)
    assert [int(r["epoch"]) for r in rows(tmp_path / "nodes")] == [1]
    resumed = on_two_nodes("--resume", tmp_path / "nodes" / "weights" / "last.pt", "epochs=2")
    assert "resuming from epoch 2" in resumed and "2 ranks in sync" in resumed
    assert [int(r["epoch"]) for r in rows(tmp_path / "nodes")] == [1, 2]
