"""Shared fixtures: sample photos and peer checkpoints built once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import peers
import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics: never try the network
ASSETS = peers.ASSETS
PHOTOS = [ASSETS / "bus.jpg", ASSETS / "zidane.jpg"]


def detect_command(*args) -> list[str]:
    """`detect args...` as run by this Python (the package under test, whatever `detect` script is on PATH)."""
    return [sys.executable, "-m", "detr_toolkit.cli", *map(str, args)]


def detect(*args, cwd=None) -> subprocess.CompletedProcess:
    """Run `detect args...` to its end, its output captured as text."""
    return subprocess.run(detect_command(*args), check=False, capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="session")
def peer_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("peers")


@pytest.fixture(scope="session")
def ultralytics_l(peer_dir) -> Path:
    """A perturbed ultralytics rtdetr-l checkpoint (80 classes), as `RTDETR(...).save()` writes it."""
    return peers.ultralytics_checkpoint(peer_dir, "rtdetr-l")


@pytest.fixture(scope="session")
def ultralytics_x(peer_dir) -> Path:
    return peers.ultralytics_checkpoint(peer_dir, "rtdetr-x", seed=1)


@pytest.fixture(scope="session")
def ultralytics_l3(peer_dir) -> Path:
    """rtdetr-l with 3 classes."""
    return peers.ultralytics_checkpoint(peer_dir, "rtdetr-l", nc=3, seed=2)


# A small RT-DETR (same architecture, narrow and shallow) for tests of everything around the model.
TINY_CONFIG = {
    "nc": 4,
    "names": {0: "cat", 1: "dog", 2: "bus", 3: "person"},
    "imgsz": 128,
    "backbone": {
        "type": "hgnetv2",
        "stem": [8, 16],
        "layers_per_block": 2,
        "stages": [
            {"mid": 8, "out": 16, "blocks": 1, "kernel": 3, "light": False, "downsample": False},
            {"mid": 8, "out": 32, "blocks": 1, "kernel": 3, "light": False, "downsample": True},
            {"mid": 16, "out": 48, "blocks": 2, "kernel": 5, "light": True, "downsample": True},
            {"mid": 16, "out": 64, "blocks": 1, "kernel": 5, "light": True, "downsample": True},
        ],
        "return_stages": [1, 2, 3],
    },
    "encoder": {"type": "hybrid", "hidden_dim": 32, "ffn_dim": 64, "num_heads": 4, "csp_blocks": 1},
    "decoder": {
        "type": "rtdetr", "hidden_dim": 32, "num_queries": 20, "num_layers": 2, "num_heads": 4, "num_points": 2,
        "ffn_dim": 64, "eval_size": 128,
    },
}  # fmt: skip


TINY_DFINE_CONFIG = {  # the shipped dfine-n.yaml, narrowed: write it to a file beside others to load its base
    "base": "dfine-n.yaml", "nc": 4, "imgsz": 64,
    "backbone": {"stem": [8, 8], "layers_per_block": 2, "stages": [
        {"mid": 8, "out": 16, "blocks": 1, "kernel": 3, "light": False, "downsample": False},
        {"mid": 8, "out": 32, "blocks": 1, "kernel": 3, "light": False, "downsample": True},
        {"mid": 16, "out": 48, "blocks": 1, "kernel": 5, "light": True, "downsample": True},
        {"mid": 16, "out": 64, "blocks": 1, "kernel": 5, "light": True, "downsample": True}]},
    "encoder": {"hidden_dim": 32, "ffn_dim": 64, "num_heads": 4, "csp_blocks": 1},
    "decoder": {"hidden_dim": 32, "num_queries": 20, "num_heads": 4, "num_points": [2, 2], "ffn_dim": 64,
                "eval_size": 64, "reg_max": 16},
}  # fmt: skip

# A small ViT + LW-DETR decoder (RF-DETR / LW-DETR family) with 3 query groups, 64 px inputs.
TINY_VIT_CONFIG = {
    "nc": 4,
    "imgsz": 64,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "backbone": {"type": "vit", "dim": 32, "depth": 2, "num_heads": 2, "patch_size": 16, "pos_embed_size": 4,
                 "window_grid": 2, "global_blocks": [1], "out_indices": [0, 1],
                 "projector": {"scale_factors": [1.0], "out_channels": 32, "blocks": 1}},
    "encoder": {"type": "none"},
    "decoder": {"type": "lwdetr", "hidden_dim": 32, "num_queries": 10, "num_layers": 2, "num_heads": 4,
                "cross_heads": 4, "num_points": 2, "ffn_dim": 64, "num_groups": 3},
}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Our safetensors file of a tiny random model."""
    import copy

    import torch

    from detr_toolkit import RTDETR

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    RTDETR(copy.deepcopy(TINY_CONFIG)).save(path)
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, Path]:
    """A generated shapes dataset (12 train and 4 val images of 64 px) and a tiny model's config file without class
    names (the data's are taken): (data.yaml, tiny.yaml), one per test module."""
    import copy

    import yaml

    from detr_toolkit.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("shapes")
    data = make_synthetic(root, train=12, val=4, size=64, max_objects=3)
    config = copy.deepcopy(TINY_CONFIG)
    config.pop("names")
    (root / "tiny.yaml").write_text(yaml.safe_dump(config))
    return data, root / "tiny.yaml"


def rows(run: Path) -> list[dict[str, str]]:
    """The rows of a training run's results.csv (none if it has none)."""
    import csv

    path = run / "results.csv"
    return list(csv.DictReader(path.open())) if path.exists() else []
