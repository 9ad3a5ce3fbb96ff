"""Sub-pixel convolution (``pixel_shuffle``), starting as nearest-neighbour upsampling."""

from __future__ import annotations

import torch
from torch import nn

from seg.models.upsamplers import UPSAMPLERS, ConvKernelUpsampler


@UPSAMPLERS.register("pixel_shuffle")
class PixelShuffleUpsampler(ConvKernelUpsampler):
    """Sub-pixel convolution (Shi et al. 2016): a conv to ``C * f^2`` maps, rearranged into
    an ``f`` times larger map. ICNR initialisation (Aitken et al. 2017) gives every
    sub-pixel the same kernel, here the identity, so at initialisation the output equals
    nearest-neighbour upsampling, free of checkerboard artifacts."""

    def __init__(self, channels: int, factor: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.factor = factor
        self.conv = nn.Conv2d(channels, channels * factor**2, kernel_size,
                              padding=kernel_size // 2)
        self.shuffle = nn.PixelShuffle(factor)
        with torch.no_grad():
            identity = torch.zeros(channels, channels, kernel_size, kernel_size)
            nn.init.dirac_(identity)
            # PixelShuffle reads output channel c * f^2 + i as sub-pixel i of channel c.
            self.conv.weight.copy_(identity.repeat_interleave(factor**2, dim=0))
            nn.init.zeros_(self.conv.bias)
        self.remember_initial_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))  # (B, C, H f, W f)
