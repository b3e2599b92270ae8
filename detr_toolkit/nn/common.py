"""Small building blocks shared by every part of the detector: activations, MLP, RMSNorm, SwiGLU, LayerNorm2d,
inverse sigmoid, the DETR head initialisation."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, None: nn.Identity}


def activation(name: str | None) -> nn.Module:
    """An activation module by its config name (`relu`, `silu`, `gelu`, or None for identity)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(k for k in ACTIVATIONS if k)}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """A stack of `num_layers` linear layers with an activation (ReLU by default) between them.

    Shapes: (..., in_dim) -> (..., out_dim).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, act: str = "relu"):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension, computed in float32: weight * x / sqrt(mean(x^2) + eps).
    Plain ops, so that every ONNX opset exports it. Shapes: (..., dim) -> (..., dim)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


class SwiGLU(nn.Module):
    """Gated feed-forward network: down(silu(gate(x)) * up(x)) (DEIMv2's decoder FFN).

    Shapes: (..., dim) -> (..., dim), through `hidden_dim` features.
    """

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.gate = nn.Linear(dim, hidden_dim)
        self.up = nn.Linear(dim, hidden_dim)
        self.down = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """logit(x) with x clamped to [eps, 1 - eps], so boxes on the border stay finite."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class LearnableAffine(nn.Module):
    """y = scale * x + bias with two learned scalars (PP-HGNetV2's learnable affine block, after activations)."""

    def __init__(self, scale: float = 1.0, bias: float = 0.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([scale]))
        self.bias = nn.Parameter(torch.tensor([bias]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.bias


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a feature map. Shapes: (B, C, H, W) -> (B, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def init_detection_heads(score_heads: Iterable[nn.Linear], bbox_heads: Iterable[MLP], prior: float = 0.01) -> None:
    """DETR-family head init: class biases at a `prior` probability, box deltas (last layer) at zero."""
    prior_bias = -math.log((1 - prior) / prior)
    for head in score_heads:
        nn.init.constant_(head.bias, prior_bias)
    for head in bbox_heads:
        nn.init.zeros_(head.layers[-1].weight)
        nn.init.zeros_(head.layers[-1].bias)
