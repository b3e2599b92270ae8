"""Half precision: float16 on CUDA, bfloat16 autocast on CPUs with native bf16, float32 elsewhere."""

from __future__ import annotations

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
    predictor = model._get_predictor(None, True)
    assert next(predictor.model.parameters()).dtype == torch.float32  # weights stay; autocast computes in bf16
    assert half.boxes.data.dtype == torch.float32 and len(half) == len(full)
    if predictor.dtype == torch.bfloat16:
        # bf16 keeps 8 bits of mantissa: scores move by ~1e-2, not more, on a well-conditioned model.
        assert torch.allclose(half.boxes.conf.sort().values, full.boxes.conf.sort().values, atol=0.01)
