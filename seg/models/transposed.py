"""The transposed convolution ("deconvolution"), FCN's learned upsampler, starting as
bilinear interpolation."""

from __future__ import annotations

import torch
from torch import nn

from seg.errors import BadValue
from seg.models.phase_kernels import PhaseConvTranspose2d, bilinear_kernel, replicate_edges
from seg.models.upsamplers import UPSAMPLERS


@UPSAMPLERS.register("transposed")
class TransposedConvUpsampler(nn.Module):
    """Learned upsampling by a transposed convolution ("deconvolution").

    Kernel ``2f - f % 2``, stride ``f``: the output is exactly ``f`` times the input.
    With ``init="bilinear"`` the kernel starts as the bilinear kernel, so at
    initialisation the output equals ``F.interpolate(bilinear, align_corners=False)``.
    The input is first padded by one replicated pixel, because
    interpolation clamps at the image edge where a zero-padded convolution would fade
    towards zero over about f/2 pixels; the padding ``f // 2 + f`` of the transposed
    convolution then crops its output to exactly ``f`` times the unpadded input.

    ``channelwise``: one kernel per channel (grouped); otherwise a full C -> C kernel,
    initialised diagonal, as FCN's net surgery did. ``learnable=False`` freezes it.
    The layer is a :class:`PhaseConvTranspose2d`: the same function, faster on CPUs.
    """

    def __init__(
        self,
        channels: int,
        factor: int,
        learnable: bool = True,
        init: str = "bilinear",
        channelwise: bool = True,
    ) -> None:
        super().__init__()
        if init not in ("bilinear", "kaiming"):
            raise BadValue(f"transposed upsampler init must be bilinear or kaiming, got {init}")
        self.channels = channels
        self.factor = factor
        self.deconv = PhaseConvTranspose2d(
            channels,
            channels,
            kernel_size=2 * factor - factor % 2,
            stride=factor,
            padding=factor // 2 + factor,
            groups=channels if channelwise else 1,
            bias=False,
        )
        self.initial_weight: torch.Tensor
        self.register_buffer("initial_weight", self.bilinear_weight(), persistent=False)
        with torch.no_grad():
            if init == "bilinear":
                self.deconv.weight.copy_(self.initial_weight)
            else:
                nn.init.kaiming_normal_(self.deconv.weight, nonlinearity="linear")
        self.deconv.weight.requires_grad_(learnable)

    @property
    def weight(self) -> torch.Tensor:
        return self.deconv.weight

    def bilinear_weight(self) -> torch.Tensor:
        """The weight that makes this layer bilinear interpolation: (C, C or 1, k, k)."""
        kernel = bilinear_kernel(self.factor)
        weight = torch.zeros_like(self.deconv.weight)
        if self.deconv.groups == self.channels:
            weight[:] = kernel
        else:
            weight[range(self.channels), range(self.channels)] = kernel
        return weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        return self.deconv(replicate_edges(x))  # (B, C, H f, W f)
