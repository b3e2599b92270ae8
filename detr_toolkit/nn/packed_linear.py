"""Linear layers with their weights packed once for oneDNN, for CPU inference.

`nn.Linear` on CPU hands its weight to the GEMM library on every call, which copies it into the kernel's
blocked layout (and, under bfloat16 autocast, first casts it). A transformer calls its linear layers with
the same weights hundreds of times per image; packing them once at load time, as torch.compile's CPU
freezing pass does, makes them 10-15% faster and drops the casts. Inference only: no gradients flow.
"""

from __future__ import annotations

import torch
from torch import nn


def can_pack_linears(dtype: torch.dtype) -> bool:
    """Whether this PyTorch build runs oneDNN's packed linear for `dtype` (float32, or bfloat16 natively)."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False  # (the ops torch.compile's CPU passes use; absent from builds without oneDNN)
    return dtype == torch.float32 or (dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class PackedLinear(nn.Module):
    """An `nn.Linear` computing in `dtype` with its weight in oneDNN's layout.

    Shapes: (..., in_features) any dtype -> (..., out_features) in `dtype` (the input is cast, as autocast would).
    The packed weight is an opaque oneDNN tensor, held as a plain attribute: it has no storage to copy, so a
    packed model is not to be copied, moved or saved; pack a model's inference copy last.
    """

    def __init__(self, linear: nn.Linear, dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features, self.dtype = linear.in_features, linear.out_features, dtype
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().to(dtype))
        bias = None if linear.bias is None else linear.bias.detach().to(dtype)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype={self.dtype}"


def pack_linears(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Replace every `nn.Linear` of a CPU inference model by a `PackedLinear` computing in `dtype`; returns it."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Linear:
                setattr(parent, name, PackedLinear(child, dtype))
    return model
