"""The CUDA paths: predict in float32 and float16, val, AMP training, and onnxruntime's CUDA provider.

They run where a GPU is (CI machines have none; the README's GPU table was measured with them on one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import PHOTOS
from test_onnx_model import assert_same_detections

from detr_toolkit import RTDETR
from detr_toolkit.data.synthetic import make_synthetic

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEMO = Path(__file__).parent.parent / "assets" / "rtdetr-tiny-shapes.safetensors"
SHAPES = Path(__file__).parent.parent / "assets" / "shapes.jpg"
SOURCES = [SHAPES, *PHOTOS]


def test_cuda_predicts_as_the_cpu_in_float32_and_close_in_float16():
    cpu, gpu = RTDETR(DEMO, device="cpu"), RTDETR(DEMO, device=0)
    expected = cpu.predict(SOURCES, conf=0.3)
    # cuDNN convolutions may round through TF32: detections agree to a fraction of a pixel
    assert_same_detections(gpu.predict(SOURCES, conf=0.3), expected, box_px=0.5, score=5e-3)
    half = gpu.predict(SOURCES, conf=0.3, half=True)
    assert gpu._get_predictor(None, True).model.dtype == torch.float16
    assert_same_detections(half, expected, box_px=1.0, score=2e-2)


def test_cuda_val_in_float16_scores_as_float32(tmp_path):
    data = make_synthetic(tmp_path / "shapes", train=1, val=60, seed=5)
    model = RTDETR(DEMO, device=0)
    full = model.val(data, verbose=False)["metrics"]
    half = model.val(data, verbose=False, half=True)["metrics"]
    assert full["mAP50"] > 0.8
    for key in ("mAP50-95", "mAP50"):
        assert abs(half[key] - full[key]) < 0.01, (key, half[key], full[key])


@pytest.mark.parametrize("amp", ["bf16", "fp16", "none"])
def test_cuda_trains_with_mixed_precision(amp, tmp_path):
    """A short fine-tune of the demo model on the GPU keeps its accuracy in every precision (fp16 with a scaler)."""
    data = make_synthetic(tmp_path / "shapes", train=64, val=32, seed=7)
    model = RTDETR(DEMO, device=0)
    before = model.val(data, verbose=False)["metrics"]["mAP50"]
    model.train(data=data, epochs=2, batch=16, amp=amp, lr=1e-5, lr_backbone=1e-6, warmup_iters=0, device=0,
                project=tmp_path, name=amp, plots=False, verbose=False)  # fmt: skip
    after = model.val(data, verbose=False)["metrics"]["mAP50"]
    assert after > before - 0.05, (before, after)
    assert next(model.model.parameters()).device.type == "cuda"


def test_onnxruntime_cuda_provider_predicts_as_the_cpu(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip(f"onnxruntime {onnxruntime.__version__} has no CUDA provider (onnxruntime-gpu has)")
    file = RTDETR(DEMO).export(dynamic=True, file=tmp_path / "demo.onnx")
    gpu = RTDETR(file, device=0)
    assert gpu.exported.providers[0] == "CUDAExecutionProvider"
    assert_same_detections(gpu.predict(SOURCES, conf=0.3), RTDETR(file, device="cpu").predict(SOURCES, conf=0.3),
                           box_px=0.5, score=5e-3)  # fmt: skip
