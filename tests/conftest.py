"""Shared fixtures: sample photos and peer checkpoints built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import peers

os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics: never try the network
ASSETS = peers.ASSETS
PHOTOS = [ASSETS / "bus.jpg", ASSETS / "zidane.jpg"]


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
