"""Fine-tuning trained weights on a small set of other classes: the path of a user who starts from `rtdetrv2-s.pth`
or `dfine-s.pth`, at a tiny size (scripts/bench_finetune.py measures it at a larger one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from detr_toolkit import RTDETR
from detr_toolkit.data.synthetic import make_synthetic

pytestmark = pytest.mark.slow  # every test here takes seconds (see the README's test commands)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def outlines(tmp_path_factory) -> Path:
    """Hexagons and crosses drawn as outlines: classes and a style the demo model never saw."""
    root = tmp_path_factory.mktemp("outlines")
    return make_synthetic(root, train=48, val=24, size=96, max_objects=3, classes=["hexagon", "cross"],
                          style="outline", seed=5)  # fmt: skip


def test_fine_tuned_demo_model_beats_the_same_model_from_scratch(outlines, tmp_path, capsys):
    """The demo model (rtdetr-tiny trained on 800 images of filled shapes), fine-tuned, against rtdetr-tiny from
    scratch: the same data, settings and steps; the class heads start afresh, everything else is the trained
    model's, and it scores far higher."""
    settings = {"data": str(outlines), "epochs": 8, "batch": 8, "imgsz": 96, "workers": 0, "lr": 1e-3,
                "lr_backbone": 1e-4, "warmup_iters": 10, "threads": 2, "project": str(tmp_path),
                "plots": False}  # fmt: skip
    tuned = RTDETR(ROOT / "assets" / "rtdetr-tiny-shapes.safetensors")
    tuned.train(**settings, name="fine-tuned")
    assert "fine-tuning to 2 classes (hexagon, cross): re-initialised decoder.dec_score_head" in capsys.readouterr().out
    scratch = RTDETR(ROOT / "configs" / "rtdetr-tiny.yaml")
    scratch.train(**settings, name="scratch")
    tuned_map, scratch_map = (model.val(str(outlines), imgsz=96)["metrics"]["mAP50"] for model in (tuned, scratch))
    assert tuned_map > max(2 * scratch_map, scratch_map + 0.2), (tuned_map, scratch_map)
