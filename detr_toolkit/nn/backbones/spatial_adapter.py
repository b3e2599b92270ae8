"""DEIMv2's spatial tuning adapter (Huang et al., 2025, "Real-Time Object Detection Meets DINOv3"): a small CNN
beside the ViT that keeps the fine detail its 16-pixel patches lose.

    image --3x3 s2 conv, GELU, max-pool s2--> stride 4
          --3x3 s2 conv--> stride 8 (2c channels)
          --GELU, 3x3 s2 conv--> stride 16 (4c)
          --GELU, 3x3 s2 conv--> stride 32 (4c)
"""

from __future__ import annotations

import torch
from torch import nn

from ..conv import ConvNormAct


class SpatialTuningAdapter(nn.Module):
    """Shapes: (B, 3, H, W) -> [(B, 2c, H/8, W/8), (B, 4c, H/16, W/16), (B, 4c, H/32, W/32)], c = `width`."""

    def __init__(self, width: int = 16, norm_eps: float = 1e-5):
        super().__init__()
        conv = {"act": None, "norm_eps": norm_eps}
        self.stem = ConvNormAct(3, width, 3, 2, act="gelu", norm_eps=norm_eps)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.conv8 = ConvNormAct(width, 2 * width, 3, 2, **conv)
        self.conv16 = ConvNormAct(2 * width, 4 * width, 3, 2, **conv)
        self.conv32 = ConvNormAct(4 * width, 4 * width, 3, 2, **conv)
        self.act = nn.GELU()
        self.out_channels = [2 * width, 4 * width, 4 * width]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        stride8 = self.conv8(self.pool(self.stem(images)))
        stride16 = self.conv16(self.act(stride8))
        return [stride8, stride16, self.conv32(self.act(stride16))]
