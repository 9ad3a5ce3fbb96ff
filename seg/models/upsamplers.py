"""Upsamplers: modules that enlarge a feature map by an integer factor.

Every upsampler maps ``(B, C, H, W) -> (B, C, H * factor, W * factor)``, so the
decoder can swap them freely. They are built by name through a registry:
``build_upsampler("transposed", channels=21, factor=2)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

UPSAMPLERS: dict[str, Callable[..., nn.Module]] = {}


def register_upsampler(name: str) -> Callable:
    """Class decorator that makes an upsampler buildable by ``name``."""

    def register(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        UPSAMPLERS[name] = cls
        return cls

    return register


def build_upsampler(name: str, channels: int, factor: int, **options) -> nn.Module:
    """Build the upsampler registered as ``name`` for ``channels`` maps and ``factor``."""
    if name not in UPSAMPLERS:
        valid = ", ".join(sorted(UPSAMPLERS))
        raise ValueError(f"unknown upsampler '{name}': valid names are {valid}")
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"upsampling factor must be a positive integer, got {factor!r}")
    return UPSAMPLERS[name](channels=channels, factor=factor, **options)


def bilinear_kernel(factor: int) -> torch.Tensor:
    """The 2-D kernel of size ``2f - f % 2`` that makes a stride-f transposed conv
    reproduce bilinear interpolation (FCN's ``upsample_filt``)."""
    size = 2 * factor - factor % 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return torch.outer(taps, taps).float()  # (size, size)


@register_upsampler("bilinear")
class BilinearUpsampler(nn.Module):
    """Fixed bilinear resizing, ``F.interpolate(align_corners=False)``; no parameters."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.channels = channels
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)


@register_upsampler("transposed")
class TransposedConvUpsampler(nn.Module):
    """Learned upsampling by a transposed convolution ("deconvolution").

    Kernel ``2f - f % 2``, stride ``f``, padding ``f // 2``: the output is exactly
    ``f`` times the input. The kernel starts as the bilinear kernel, one per channel,
    so at initialisation the output equals bilinear interpolation. The input is
    first padded by one replicated pixel (and the output cropped back), because
    interpolation clamps at the image edge where a zero-padded convolution would fade.
    """

    def __init__(self, channels: int, factor: int, learnable: bool = True) -> None:
        super().__init__()
        self.channels = channels
        self.factor = factor
        kernel_size = 2 * factor - factor % 2
        self.deconv = nn.ConvTranspose2d(
            channels,
            channels,
            kernel_size=kernel_size,
            stride=factor,
            padding=factor // 2,
            groups=channels,
            bias=False,
        )
        with torch.no_grad():
            self.deconv.weight.copy_(bilinear_kernel(factor).expand_as(self.deconv.weight))
        self.deconv.weight.requires_grad_(learnable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        out = self.deconv(padded)  # (B, C, (H + 2) f, (W + 2) f)
        f = self.factor
        return out[:, :, f:-f, f:-f]
