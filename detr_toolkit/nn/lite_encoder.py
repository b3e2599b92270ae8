"""DEIMv2's lite encoder for its smallest sizes (Atto, Femto, Pico): no attention, one backbone map in, two out.

stride-16 map --input_proj--> p16
p16 --avg-pool s2, 1x1 conv--> p32, plus its global average --1x1 conv--> p32
top-down:  p16 + upsampled p32 --ELAN5--> o16
bottom-up: p32 + (avg-pool s2, 1x1 conv)(o16) --ELAN5--> o32
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import ConvNormAct
from .csp import ELAN5
from .validation import Count


class LiteEncoder(nn.Module):
    """Shapes: [(B, in_channels[0], H, W)] (the backbone's stride-s map) -> [(B, hidden_dim, H, W),
    (B, hidden_dim, H / 2, W / 2)] at strides s and 2s.

    `csp_blocks`, `expansion`, `trailing_conv`: the ELAN5 blocks', as in `HybridEncoder`.
    """

    def __init__(
        self,
        in_channels: list[int],
        in_strides: list[int],
        hidden_dim: int = 64,
        csp_blocks: Count = 2,
        expansion: float = 0.34,
        trailing_conv: bool = True,
        act: str = "silu",
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        if len(in_channels) != 1:
            raise ValueError(f"the lite encoder takes one backbone map, got {len(in_channels)}")
        conv = {"act": act, "norm_eps": norm_eps}
        self.input_proj = nn.ModuleList([ConvNormAct(in_channels[0], hidden_dim, 1, act=None, norm_eps=norm_eps)])
        self.pool = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)
        self.down1 = ConvNormAct(hidden_dim, hidden_dim, 1, **conv)
        self.global_fusion = ConvNormAct(hidden_dim, hidden_dim, 1, **conv)
        self.down2 = ConvNormAct(hidden_dim, hidden_dim, 1, **conv)
        width = round(expansion * hidden_dim // 2)
        self.fpn_block = ELAN5(hidden_dim, hidden_dim, width, csp_blocks, trailing_conv, **conv)
        self.pan_block = ELAN5(hidden_dim, hidden_dim, width, csp_blocks, trailing_conv, **conv)
        self.out_channels = [hidden_dim] * 2
        self.out_strides = [in_strides[0], 2 * in_strides[0]]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        fine = self.input_proj[0](features[0])
        coarse = self.down1(self.pool(fine))
        coarse = self.global_fusion(coarse + F.adaptive_avg_pool2d(coarse, 1))
        fine = self.fpn_block(fine + F.interpolate(coarse, scale_factor=2.0, mode="nearest"))
        return [fine, self.pan_block(coarse + self.down2(self.pool(fine)))]
