"""What the CNN backbones (HGNetv2, ResNet-vd) share: a stem, then stages, some of whose outputs feed the encoder."""

from __future__ import annotations

import torch
from torch import nn


class StagedBackbone(nn.Module):
    """Runs `self.stem` then `self.stages` (set by the subclass) and returns the maps of `return_stages`.

    Shapes: (B, 3, H, W) -> [(B, out_channels[i], H / out_strides[i], W / out_strides[i]) per returned stage].
    """

    stem: nn.Module
    stages: nn.ModuleList

    def finish(self, channels: list[int], strides: list[int], return_stages: list[int], frozen_parts: int) -> None:
        """Record what the stages return, from `channels` and `strides` of the stem (index 0) and each stage;
        stop gradients to the first `frozen_parts` parts (1: the stem, 2: the stem and stage 0, ...)."""
        if not all(0 <= i < len(self.stages) for i in return_stages):
            raise ValueError(f"return_stages {list(return_stages)} must be stages 0..{len(self.stages) - 1}")
        self.return_stages = list(return_stages)
        self.out_channels = [channels[i + 1] for i in self.return_stages]
        self.out_strides = [strides[i + 1] for i in self.return_stages]
        self.stride = max(strides)  # input sides are multiples of the coarsest stride
        for part in [self.stem, *self.stages][:frozen_parts]:
            part.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.return_stages:
                features.append(x)
        return features
