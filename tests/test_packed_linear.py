"""CPU inference packs linear layers for oneDNN: same outputs as nn.Linear (float32) or its bf16 autocast."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from detr_toolkit import RTDETR
from detr_toolkit.nn import fuse_model
from detr_toolkit.nn.packed_linear import PackedLinear, can_pack_linears

NATIVE_BF16 = can_pack_linears(torch.bfloat16)


@pytest.mark.parametrize("bias", [True, False])
def test_float32_packed_linear_matches_linear(bias):
    torch.manual_seed(0)
    linear = nn.Linear(48, 96, bias=bias)
    x = torch.randn(3, 11, 64)[..., 8:56]  # 3-d and not contiguous, as a sliced token sequence is
    with torch.inference_mode():
        packed = PackedLinear(linear, torch.float32)
        assert torch.allclose(packed(x), linear(x), atol=1e-5)
        assert packed(x[0]).shape == (11, 96)


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bfloat16: half stays float32 here")
def test_bfloat16_packed_linear_is_what_autocast_computes():
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    x = torch.randn(5, 64)
    with torch.inference_mode():
        with torch.autocast("cpu", torch.bfloat16):
            expected = linear(x)
        out = PackedLinear(linear, torch.bfloat16)(x)
    assert out.dtype == expected.dtype == torch.bfloat16
    assert torch.allclose(out.float(), expected.float(), rtol=1e-2, atol=1e-2)


def test_cpu_predictor_packs_every_linear_and_computes_what_the_unpacked_model_does(tiny_weights):
    model = RTDETR(tiny_weights)
    predictor = model._get_predictor("cpu", False)
    assert not any(type(m) is nn.Linear for m in predictor.model.model.modules())
    assert any(isinstance(m, PackedLinear) for m in predictor.model.model.modules())
    assert not any(isinstance(m, PackedLinear) for m in model.model.modules())  # the user's model is untouched
    unpacked = fuse_model(copy.deepcopy(model.model)).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        packed_outputs, outputs = predictor.model.model(images), unpacked(images)
    for key in ("logits", "boxes"):
        assert torch.allclose(packed_outputs[key], outputs[key], atol=1e-4), key
