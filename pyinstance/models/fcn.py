"""Fully connected layers over a pooled map, rewritten as convolutions at full resolution.

VGG and AlexNet end with a max-pool and a fully connected layer over a k×k grid of pooled
cells. Long et al. turn that layer into a k×k convolution; to keep the class map at the
resolution of the (un-pooled) feature map, we pool with stride 1 instead of 2 and dilate
the convolution by 2 (à trous, as DeepLab does). At every location the result equals the
original network applied to the window around it; in particular at a 224-pixel input the
location ``k // 2 + offset`` holds exactly the original classifier's output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PooledDilatedConv(nn.Conv2d):
    """Stride-1 max-pool (``pool`` × ``pool``) then a k×k convolution dilated by 2, same size out."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, pool: int):
        total = 2 * (kernel_size - 1)
        super().__init__(in_channels, out_channels, kernel_size, dilation=2, padding=0)
        self.pool = pool
        # pad so that output size == input size; odd pools centre, even pools pad after
        self._pool_pad = ((pool - 1) // 2, pool - 1 - (pool - 1) // 2)
        self._conv_pad = (total // 2, total - total // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before, after = self._pool_pad
        x = F.pad(x, (before, after, before, after), value=float("-inf"))
        x = F.max_pool2d(x, self.pool, stride=1)
        before, after = self._conv_pad
        x = F.pad(x, (before, after, before, after))
        return super().forward(x)
