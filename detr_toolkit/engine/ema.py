"""Exponential moving average of the weights (Polyak averaging), evaluated and saved instead of the raw weights."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """ema = d * ema + (1 - d) * model after each optimizer step, d = decay * (1 - exp(-updates / tau)),
    so early (noisy) weights are forgotten fast. Buffers (batch-norm statistics) are copied."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: int = 2000, updates: int = 0):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        ema_state, state = self.module.state_dict(), model.state_dict()
        floats = [k for k, v in state.items() if v.dtype.is_floating_point]
        torch._foreach_lerp_([ema_state[k] for k in floats], [state[k] for k in floats], 1 - d)  # one fused pass
        for key, value in state.items():
            if not value.dtype.is_floating_point:
                ema_state[key].copy_(value)
