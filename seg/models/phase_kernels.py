"""Phase kernels: the transposed convolutions of the learned upsamplers, computed as one
small convolution per output phase where that is faster than the native kernel, and
the bilinear kernel they start from."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def bilinear_taps(factor: int) -> torch.Tensor:
    """The 1-D taps, ``2f - f % 2`` of them, of :func:`bilinear_kernel` (fp64)."""
    size = 2 * factor - factor % 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    return 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor


def bilinear_kernel(factor: int) -> torch.Tensor:
    """The 2-D kernel of size ``2f - f % 2`` that makes a stride-f transposed conv
    reproduce bilinear interpolation (FCN's ``upsample_filt``)."""
    taps = bilinear_taps(factor)
    return torch.outer(taps, taps).float()  # (size, size)


def conv_transpose_by_phases(
    x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, groups: int = 1
) -> torch.Tensor:
    """``F.conv_transpose2d(x, weight, stride=stride, padding=padding, groups=groups)``,
    computed as sub-pixel convolution: one small stride-1 convolution per output phase,
    then a pixel shuffle.

    Output pixel ``o`` of a stride-f transposed convolution only sees the input pixels
    ``i`` with ``o + padding - i f`` inside the kernel, that is ``n = ceil(k / f)`` of them
    per axis, through the kernel taps of its phase ``(o + padding) mod f``. So every
    phase is an ``n x n`` convolution, and all ``f^2`` of them are one convolution with
    ``f^2`` times the output channels. The native kernel instead multiplies every input
    pixel by the whole ``k x k`` kernel and scatters the products, which is slow on CPUs
    for the large kernels of x16 and x32 upsampling.
    """
    f = stride
    in_channels, out_per_group, k, _ = weight.shape
    n = math.ceil(k / f)
    taps = F.pad(weight, (0, n * f - k, 0, n * f - k))  # (Cin, Cout/g, n f, n f)
    # tap t = j f + r: r is the output phase, j the input offset (reversed for correlation)
    taps = taps.view(groups, in_channels // groups, out_per_group, n, f, n, f).flip(3, 5)
    phase_weight = taps.permute(0, 2, 4, 6, 1, 3, 5).reshape(
        groups * out_per_group * f * f, in_channels // groups, n, n)  # (Cout f^2, Cin/g, n, n)
    # Output row o is phase o mod f of coarse row o // f, which reads padded input rows
    # o // f .. o // f + n - 1. Only the coarse rows that reach the output are computed.
    height = (x.shape[-2] - 1) * f - 2 * padding + k
    width = (x.shape[-1] - 1) * f - 2 * padding + k
    first = padding // f  # the first coarse row (and column) that reaches the output
    last_row, last_col = -(-(padding + height) // f), -(-(padding + width) // f)
    padded = F.pad(x.contiguous(), (n - 1,) * 4)  # contiguous: the shuffle below is a view
    window = padded[:, :, first:last_row + n - 1, first:last_col + n - 1]
    phases = phase_convolution(window, phase_weight, groups)  # (B, Cout f^2, rows, cols)
    batch, _, rows, cols = phases.shape
    out_channels = groups * out_per_group
    shuffled = (phases.view(batch, out_channels, f, f, rows, cols)
                .permute(0, 1, 4, 2, 5, 3)
                .reshape(batch, out_channels, rows * f, cols * f))
    offset = padding - first * f
    return shuffled[:, :, offset:offset + height, offset:offset + width]


def phase_convolution(window: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``F.conv2d(window, weight, groups=groups)``; one per input channel (the channelwise
    upsamplers') runs in fp32 under the CPU's bf16 autocast and hands on bf16, as
    ``Trainer`` keeps depthwise layers (seg.engine.precision): oneDNN's bf16 backward of
    such a convolution is several times slower than fp32's (U-Net's last transposed step,
    32 channels from 58x58, batch 8, one thread: 105.5 against 37.8 ms)."""
    per_channel = groups > 1 and groups == window.shape[1]
    if (per_channel and window.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16):
        with torch.autocast("cpu", enabled=False):
            phases = F.conv2d(window.float(), weight.float(), groups=groups)
        return phases.to(torch.bfloat16)
    return F.conv2d(window, weight, groups=groups)


# The factors at which the phase decomposition beats the native transposed convolution,
# forward + backward, per device type and input precision (`scripts/bench.py upsample
# [--precision 32]`; BENCHMARKS.md has the times). Elsewhere the native kernel runs.
PHASES_FASTER: dict[tuple[str, torch.dtype], frozenset[int]] = {
    ("cpu", torch.float32): frozenset({16, 32}),
    ("cpu", torch.bfloat16): frozenset({2, 4, 8, 16, 32}),
    ("cuda", torch.float32): frozenset({2, 4, 8, 16, 32}),
    ("cuda", torch.bfloat16): frozenset({2, 4, 8, 16, 32}),
}


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The precision a convolution of ``x`` runs in: autocast's, where it is on (the
    decoder hands fp32 scores to its upsamplers, which autocast then runs in bf16)."""
    device = x.device.type
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


class PhaseConvTranspose2d(nn.ConvTranspose2d):
    """An ``nn.ConvTranspose2d`` (same parameters, function and gradients) computed by
    :func:`conv_transpose_by_phases` where that is faster (``PHASES_FASTER``) and it can:
    square stride, kernel and padding, no dilation or output padding. Anything else takes
    the native kernel."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        stride, kernel, padding = self.stride[0], self.kernel_size[0], self.padding[0]
        square = (self.stride == (stride,) * 2 and self.kernel_size == (kernel,) * 2
                  and self.padding == (padding,) * 2)
        plain = self.dilation == (1, 1) and self.output_padding == (0, 0)
        # ONNX has ConvTranspose; the phases' slicing would be traced for one input size
        exporting = torch.onnx.is_in_onnx_export()
        faster = stride in PHASES_FASTER.get((x.device.type, compute_dtype(x)), frozenset())
        if (output_size is not None or not (square and plain) or self.padding_mode != "zeros"
                or exporting or not faster):
            return super().forward(x, output_size)
        out = conv_transpose_by_phases(x, self.weight, stride, padding, self.groups)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


def replicate_edges(x: torch.Tensor) -> torch.Tensor:
    """``F.pad(x, (1, 1, 1, 1), mode="replicate")``. Under torch.compile it is written with
    ``torch.cat``, because compiling replication_pad2d's backward fails in channels_last;
    eagerly the pad is 20 times faster than the concatenations."""
    if not torch.compiler.is_compiling():
        return F.pad(x, (1, 1, 1, 1), mode="replicate")
    x = torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)
    return torch.cat([x[..., :1], x, x[..., -1:]], dim=3)  # (B, C, H + 2, W + 2)
