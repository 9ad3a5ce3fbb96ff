"""Upsamplers: modules that enlarge a feature map by an integer factor.

Every upsampler maps ``(B, C, H, W) -> (B, C, H * factor, W * factor)``, so the
decoder can swap them freely. They are built by name through a registry:
``build_upsampler("transposed", channels=21, factor=2)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from seg.errors import BadValue

UPSAMPLERS: dict[str, Callable[..., nn.Module]] = {}


def kernel_drift(upsampler: nn.Module) -> float | None:
    """``||W - W0|| / ||W0||``: how far learning moved a learned upsampler's kernel from
    its initial (fixed-equivalent) kernel ``W0``; None for upsamplers with no kernel."""
    initial = getattr(upsampler, "initial_weight", None)
    if initial is None:
        return None
    moved = upsampler.weight.detach() - initial
    return float(moved.norm() / initial.norm())


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
        raise BadValue(f"unknown upsampler '{name}': valid names are {valid}")
    if not isinstance(factor, int) or factor < 1:
        raise BadValue(f"upsampling factor must be a positive integer, got {factor!r}")
    # A private RNG: building any upsampler leaves the global random state, and so every
    # other weight of the model, exactly as it was; comparisons differ only here.
    with torch.random.fork_rng(devices=[]):
        return UPSAMPLERS[name](channels=channels, factor=factor, **options)


def resize(x: torch.Tensor, factor: int, mode: str = "bilinear") -> torch.Tensor:
    """Fixed resizing by ``factor``: bilinear (align_corners=False) or nearest."""
    if factor == 1:
        return x
    align_corners = False if mode == "bilinear" else None
    return F.interpolate(x, scale_factor=factor, mode=mode, align_corners=align_corners)


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
    phases = F.conv2d(window, phase_weight, groups=groups)  # (B, Cout f^2, rows, cols)
    batch, _, rows, cols = phases.shape
    out_channels = groups * out_per_group
    shuffled = (phases.view(batch, out_channels, f, f, rows, cols)
                .permute(0, 1, 4, 2, 5, 3)
                .reshape(batch, out_channels, rows * f, cols * f))
    offset = padding - first * f
    return shuffled[:, :, offset:offset + height, offset:offset + width]


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


@register_upsampler("bilinear")
class BilinearUpsampler(nn.Module):
    """Fixed bilinear resizing, ``F.interpolate(align_corners=False)``; no parameters."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.channels = channels
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize(x, self.factor)


@register_upsampler("transposed")
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


def replicate_edges(x: torch.Tensor) -> torch.Tensor:
    """``F.pad(x, (1, 1, 1, 1), mode="replicate")``. Under torch.compile it is written with
    ``torch.cat``, because compiling replication_pad2d's backward fails in channels_last;
    eagerly the pad is 20 times faster than the concatenations."""
    if not torch.compiler.is_compiling():
        return F.pad(x, (1, 1, 1, 1), mode="replicate")
    x = torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)
    return torch.cat([x[..., :1], x, x[..., -1:]], dim=3)  # (B, C, H + 2, W + 2)


class ConvKernelUpsampler(nn.Module):
    """Base of upsamplers whose learned kernel is ``self.conv.weight``: it remembers the
    kernel it started from, so ``kernel_drift`` can tell how far learning moved it."""

    conv: nn.Conv2d
    initial_weight: torch.Tensor

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    def remember_initial_weight(self) -> None:
        self.register_buffer("initial_weight", self.conv.weight.detach().clone(),
                             persistent=False)


@register_upsampler("resize_conv")
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


@register_upsampler("bilinear_conv")
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


@register_upsampler("pixel_shuffle")
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
