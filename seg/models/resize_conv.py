"""A learned convolution after fixed resizing: ``resize_conv`` (Odena et al. 2016) and
``bilinear_conv``, the study's control for "more parameters"."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seg.errors import BadValue
from seg.models.phase_kernels import bilinear_taps, conv_transpose_by_phases, replicate_edges
from seg.models.upsamplers import UPSAMPLERS, ConvKernelUpsampler, resize


@UPSAMPLERS.register("resize_conv")
class ResizeConvUpsampler(ConvKernelUpsampler):
    """Resize, then a learned 3x3 convolution (Odena, Dumoulin and Olah 2016): avoids the
    checkerboard artifacts of strided transposed convolutions. The convolution starts as
    the identity, so at initialisation the output equals the plain resize."""

    def __init__(self, channels: int, factor: int, mode: str = "bilinear") -> None:
        super().__init__()
        if mode not in ("bilinear", "nearest"):
            raise BadValue(f"resize_conv mode must be bilinear or nearest, got {mode}")
        self.channels = channels
        self.factor = factor
        self.mode = mode
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            nn.init.dirac_(self.conv.weight)
            nn.init.zeros_(self.conv.bias)
        self.remember_initial_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(resize(x, self.factor, self.mode))


@UPSAMPLERS.register("bilinear_conv")
class BilinearConvUpsampler(ConvKernelUpsampler):
    """Fixed bilinear resizing, then a learned per-channel convolution with the kernel size,
    and so the parameter count, of the channel-wise ``transposed`` upsampler (2f - f % 2).
    The study's control for "more parameters": it learns as many weights as the
    transposed layer does, but after the interpolation, not as the interpolation. It
    starts as the identity, so at initialisation the output equals bilinear resizing.

    Both steps are linear, so they run as one transposed convolution whose kernel is the
    bilinear kernel convolved with the learned one: at x32 a 64 x 64 convolution at the
    output resolution takes seconds per batch on a CPU, the composed kernel milliseconds.
    Away from the borders the output is exactly resize-then-convolve; at the borders the
    image is extended as the ``transposed`` upsampler extends it (replicated edge), not by
    zeros."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.channels = channels
        self.factor = factor
        size = 2 * factor - factor % 2
        self.conv = nn.Conv2d(channels, channels, size, groups=channels, bias=False)
        with torch.no_grad():
            # an even kernel has no centre: with one more pixel of padding after than
            # before (the "same" padding), tap (size - 1) // 2 reads the pixel itself
            self.conv.weight.zero_()
            self.conv.weight[:, :, (size - 1) // 2, (size - 1) // 2] = 1.0
        self.remember_initial_weight()
        # the bilinear taps as a (2 size - 1, size) Toeplitz matrix: row n holds
        # taps[n - (size - 1) + j] in column j, so M W M^T is the full cross-correlation
        # of the separable bilinear kernel with W (see composed_weight)
        taps = bilinear_taps(factor)
        rows = torch.arange(2 * size - 1)[:, None] - (size - 1) + torch.arange(size)[None]
        inside = (rows >= 0) & (rows < size)
        self.toeplitz: torch.Tensor
        self.register_buffer("toeplitz", torch.where(inside, taps[rows.clamp(0, size - 1)],
                                                     0.0).float(), persistent=False)

    def composed_weight(self) -> torch.Tensor:
        """The transposed-convolution kernel of resize-then-convolve: ``(C, 1, k, k)``,
        ``k = 2 (2f - f % 2) - 1``, the bilinear kernel cross-correlated with the learned
        one. Two small matrix products, as the bilinear kernel is separable: correlating
        the two kernels directly costs as much as the slow path it replaces."""
        toeplitz = self.toeplitz.to(self.conv.weight.dtype)
        return toeplitz @ self.conv.weight @ toeplitz.T  # (C, 1, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return self.conv(F.pad(x, self.same_padding()))
        size, f = self.conv.kernel_size[0], self.factor
        height, width = x.shape[-2] * f, x.shape[-1] * f
        # the transposed upsampler's padding, shifted by the learned kernel's "same" offset;
        # an even kernel needs half a pixel more: one extra row first, cropped below
        padding = f // 2 + f + size // 2 - (1 - size % 2)
        weight, padded = self.composed_weight(), replicate_edges(x)
        if torch.onnx.is_in_onnx_export():
            out = F.conv_transpose2d(padded, weight, stride=f, padding=padding,
                                     groups=self.channels)
        else:
            out = conv_transpose_by_phases(padded, weight, f, padding, self.channels)
        return out[:, :, -height:, -width:]  # (B, C, H f, W f)

    def same_padding(self) -> tuple[int, int, int, int]:
        size = self.conv.kernel_size[0]
        return ((size - 1) // 2, size // 2) * 2
