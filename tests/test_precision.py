"""Half precision: float16 on CUDA, bfloat16 autocast on CPUs with native bf16, float32 elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import PHOTOS

from detr_toolkit import RTDETR
from detr_toolkit.engine.predictor import inference_dtype


def test_inference_dtype_rule():
    cpu = torch.device("cpu")
    assert inference_dtype(cpu, half=False) == torch.float32
    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert inference_dtype(cpu, half=True) == (torch.bfloat16 if native_bf16 else torch.float32)
    assert inference_dtype(torch.device("cuda"), half=True) == torch.float16


def test_cpu_half_predicts_close_to_float32(tiny_weights):
    model = RTDETR(tiny_weights)
    full = model.predict(PHOTOS[0], conf=0.0, verbose=False)[0]
    half = model.predict(PHOTOS[0], conf=0.0, half=True, verbose=False)[0]
    inference = model._get_predictor(None, True).model
    # convolution weights stay float32 (autocast computes in bf16); linear layers are packed in the compute dtype
    assert next(inference.model.parameters()).dtype == torch.float32
    assert half.boxes.data.dtype == torch.float32 and len(half) == len(full)
    if inference.dtype == torch.bfloat16:
        # bf16 keeps 8 bits of mantissa: scores move by ~1e-2, not more, on a well-conditioned model.
        assert torch.allclose(half.boxes.conf.sort().values, full.boxes.conf.sort().values, atol=0.01)


@pytest.mark.slow
def test_bf16_keeps_the_accuracy_of_trained_weights(monkeypatch, tmp_path):
    """The trained demo model scores the same mAP in bfloat16 as in float32 (forced to bf16 autocast here, so the
    check runs on CPUs without native bf16 too): rounding moves random-weight outputs, not trained ones."""
    import detr_toolkit.model
    from detr_toolkit.data.synthetic import make_synthetic

    data = make_synthetic(tmp_path / "shapes", train=1, val=100, seed=5)
    model = RTDETR(Path(__file__).parent.parent / "assets" / "rtdetr-tiny-shapes.safetensors")
    full = model.val(data, verbose=False)["metrics"]
    monkeypatch.setattr(detr_toolkit.model, "inference_dtype", lambda device, half: torch.bfloat16)
    half = model.val(data, verbose=False, half=True)["metrics"]
    assert full["mAP50"] > 0.8  # a model that detects, so that agreement means something
    # Measured over synthetic val sets of 100 images: |difference| <= 0.004 (mAP50-95, mAP50), <= 0.012 (mAP75, the
    # strictest IoU, where rounded box edges count most).
    for key, bound in (("mAP50-95", 0.01), ("mAP50", 0.01), ("mAP75", 0.02)):
        assert abs(half[key] - full[key]) < bound, (key, half[key], full[key])


def test_chunked_attention_is_attention():
    """The chunked attention long bfloat16 sequences take on a CPU without AMX computes what
    scaled_dot_product_attention does: equal in float32 (several chunks and a partial one), within bfloat16's
    rounding in bfloat16; and a DINOv3 ViT layer in bfloat16 takes it on such a CPU, not on one with AMX."""
    import torch.nn.functional as F

    from detr_toolkit.nn import attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 1100, 64) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v)
    assert (attention.chunked_attention(q, k, v) - expected).abs().max() < 1e-5
    half = attention.chunked_attention(q.bfloat16(), k.bfloat16(), v.bfloat16()).float()
    assert (half - expected).abs().max() < 0.02
    layer = attention.MultiHeadAttention(192, 3).eval()
    tokens = torch.randn(1, attention.CHUNKED_FROM, 192)
    calls = []
    original, has_amx = attention.chunked_attention, attention.cpu_has_amx
    try:
        attention.chunked_attention = lambda *a: calls.append(1) or original(*a)
        for amx in (False, True):
            attention.cpu_has_amx = lambda amx=amx: amx
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
                layer(tokens, tokens, tokens)
    finally:
        attention.chunked_attention, attention.cpu_has_amx = original, has_amx
    assert calls == [1]  # without AMX only
