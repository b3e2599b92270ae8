"""Exponential moving average of the weights (Polyak averaging), evaluated and saved instead of the raw weights."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

AVERAGED_BUFFERS = ("running_mean", "running_var")  # batch-norm statistics: learned, so averaged


class ModelEMA:
    """ema = d * ema + (1 - d) * model after each optimizer step, d = decay * (1 - exp(-updates / tau)),
    so early (noisy) weights are forgotten fast.

    The parameters are averaged, and so are the batch-norm statistics, as RT-DETR's and ultralytics' EMAs average
    them; every other buffer is copied: integers (`num_batches_tracked`) and constants (decoder anchors, whose
    invalid positions are inf: an average of inf and inf is inf - inf = NaN in `lerp`)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: int = 2000, updates: int = 0):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates
        self._source: nn.Module | None = None  # the model whose tensors the lists below hold
        self._floats: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])  # (EMA's, model's): averaged
        self._others: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])  # other buffers: copied

    def _pair_tensors(self, model: nn.Module) -> None:
        """Pair the EMA's tensors with the model's by name, once per model: collecting state_dicts every step costs
        more than the update itself (optimizers and batch norm change the tensors in place)."""
        ema_state, state = self.module.state_dict(keep_vars=True), model.state_dict(keep_vars=True)
        parameters = {name for name, _ in model.named_parameters()}
        averaged = {k for k, v in state.items() if v.dtype.is_floating_point
                    and (k in parameters or k.endswith(AVERAGED_BUFFERS))}  # fmt: skip
        for average, pairs in ((True, self._floats), (False, self._others)):
            keys = [k for k in state if (k in averaged) == average]
            pairs[0][:] = [ema_state[k].detach() for k in keys]
            pairs[1][:] = [state[k].detach() for k in keys]
        self._source = model

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if model is not self._source:
            self._pair_tensors(model)
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        if self._floats[0]:
            torch._foreach_lerp_(*self._floats, 1 - d)  # one fused pass over all weights
        if self._others[0]:
            torch._foreach_copy_(*self._others)
