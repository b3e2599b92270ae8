"""The weight EMA: d * ema + (1 - d) * model per step with the ramped decay; integer buffers copied."""

from __future__ import annotations

import math

import torch
from torch import nn

from detr_toolkit.engine.ema import ModelEMA


def test_ema_follows_the_formula_across_steps_and_models():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = ModelEMA(model, decay=0.9, tau=2)
    expected = {k: v.clone() for k, v in ema.module.state_dict().items()}
    for step in range(1, 4):
        with torch.no_grad():  # an optimizer step and a batch-norm update, in place
            for param in model.parameters():
                param.add_(torch.randn_like(param))
        model.train()(torch.randn(2, 3, 8, 8))
        ema.update(model)
        d = 0.9 * (1 - math.exp(-step / 2))
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                expected[key] = d * expected[key] + (1 - d) * value
            else:
                expected[key] = value.clone()
        for key, value in ema.module.state_dict().items():
            torch.testing.assert_close(value, expected[key], rtol=1e-6, atol=1e-6)
    assert ema.module.state_dict()["1.num_batches_tracked"] == 3
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))  # another model: its own tensors are averaged
    ema.update(other)
    d = 0.9 * (1 - math.exp(-4 / 2))
    torch.testing.assert_close(ema.module[0].weight, d * expected["0.weight"] + (1 - d) * other[0].weight)
