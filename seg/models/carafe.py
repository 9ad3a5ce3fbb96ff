"""CARAFE (Wang, Chen, Xu, Liu, Loy and Lin, "CARAFE: Content-Aware ReAssembly of
FEatures", ICCV 2019): every output pixel is a weighted sum of the ``k x k`` input
neighbourhood around its source pixel, with weights predicted from the input.

The kernel predictor, as in the paper: a 1 x 1 channel compressor to ``C_m`` maps, a
``k_enc x k_enc`` content encoder to ``f^2 k^2`` maps, pixel-shuffled so that each
output pixel gets its own ``k x k`` kernel, normalised by a softmax. ``carafe_static``
learns one kernel per output phase that every position shares: the control for
"content-aware", with the same reassembly and no predictor.

What differs from the paper, and why:

- The paper's kernel is ``softmax(z)``; here it is ``bilinear + softmax(z) - 1 / k^2``:
  the bilinear reassembly kernel of the output pixel's phase plus the paper's kernel
  minus its own starting value (the content encoder starts at zero, so ``z`` starts at
  zero and the paper's kernel as the plain k x k average). At initialisation the output
  is therefore exactly bilinear interpolation (``align_corners=False``). A softmax alone
  cannot start there: bilinear gives most of the k x k taps weight 0, a logit of -inf,
  and a tap whose softmax weight is near 0 also gets a gradient near 0, so the kernel
  could never learn to reach beyond bilinear's 2 x 2 taps. The kernel still sums to 1
  at every pixel; a tap may dip below zero, by at most 1 / k^2.
- The neighbourhood beyond the border repeats the edge pixel (the paper pads with
  zeros), as interpolation clamps at the edge: otherwise the borders fade at the start.
- ``compressed_channels`` (the paper's 64) is a ceiling: the compressor keeps
  ``min(64, C)`` maps. The paper compresses 256 FPN channels; a class-score map has a
  few to 150, and widening a few to 64 would only multiply the encoder's cost.
- Every integer factor, not only 2, odd ones included: the encoder predicts ``f^2``
  kernels per input pixel. ``kernel_size=5``, ``encoder_kernel_size=3`` are the paper's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seg.errors import BadValue
from seg.models.phase_kernels import compute_dtype
from seg.models.upsamplers import UPSAMPLERS, resize


def bilinear_reassembly_kernels(factor: int, kernel_size: int) -> torch.Tensor:
    """(k^2, f^2): the weights bilinear interpolation (``align_corners=False``) gives the
    ``k x k`` neighbourhood of input pixel i, for the output pixel ``i f + r`` of each
    phase ``r`` (row phase major), taps in row-major order."""
    radius = kernel_size // 2
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    # output pixel i f + r reads input position i + (r + 0.5) / f - 0.5
    shift = (torch.arange(factor, dtype=torch.float64) + 0.5) / factor - 0.5
    weights = (1 - (taps[:, None] - shift[None]).abs()).clamp(min=0)  # (k, f)
    kernels = torch.einsum("ar,bt->abrt", weights, weights)  # (k, k, f, f)
    return kernels.reshape(kernel_size**2, factor**2).float()


def padded_neighbourhoods(padded: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H W, C, size^2): each pixel's ``size x size`` neighbourhood in ``padded`` (the
    input with ``size // 2`` pixels of border), taps in row-major order, in the precision
    the matrix products after it run in (autocast's). Shifted views of the channels-last
    input, stacked: ``F.unfold`` in fp32, its backward (col2im) and the copies to this
    layout took 220 of the 780 ms of a SAPA U-Net step (batch 8 at 112 px, one CPU
    thread, bf16; 572 ms this way)."""
    batch, channels = padded.shape[:2]
    height, width = padded.shape[2] - size + 1, padded.shape[3] - size + 1
    # cast after padding: CPU autocast runs the replicate pad in fp32 whatever it is given
    pixels = padded.to(compute_dtype(padded)).permute(0, 2, 3, 1)  # (B, H', W', C)
    taps = [pixels[:, row:row + height, col:col + width]
            for row in range(size) for col in range(size)]
    # taps before channels, so that each copy moves whole rows of channels
    stacked = torch.stack(taps, dim=-2).view(batch, height * width, size * size, channels)
    return stacked.transpose(-1, -2)


class Reassembly(nn.Module):
    """Base of both CARAFE upsamplers: each output pixel is its ``kernel_size``-square
    neighbourhood of the input (edge replicated) weighted by its kernel ``bilinear +
    softmax(z) - 1 / k^2``, where ``logits(x)`` gives ``z``.

    The kernel is never materialised: the bilinear and the ``1 / k^2`` terms are fixed
    reassemblies, bilinear interpolation and the k x k mean, so the output is
    ``interpolate(x) + reassemble(x, softmax(z)) - mean_k(x)``, and only the softmax's
    reassembly (one matrix product per input pixel) is computed for all ``f^2 k^2``
    weights, and the kernel tensor is neither added to nor kept for the backward pass."""

    shared_kernels = False  # the same kernels at every pixel (a class fact, not a shape)

    def __init__(self, channels: int, factor: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise BadValue(f"carafe kernel_size must be odd and at least 3 (bilinear reads "
                           f"a 3 x 3 neighbourhood), got {kernel_size}")
        self.channels = channels
        self.factor = factor
        self.kernel_size = kernel_size
        self.bilinear: torch.Tensor
        self.register_buffer("bilinear", bilinear_reassembly_kernels(factor, kernel_size),
                             persistent=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B or 1, H W or 1, f^2, k^2): the kernel logits ``z`` of every input pixel, taps
        last (the softmax's dimension, contiguous: twice as fast as across phases)."""
        raise NotImplementedError

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """(B or 1, H W or 1, f^2, k^2): every input pixel's reassembly kernels, one per
        output phase (row phase major), taps in row-major order."""
        uniform = 1.0 / self.kernel_size**2
        return self.bilinear.T + (self.logits(x).softmax(dim=-1) - uniform)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        k, f = self.kernel_size, self.factor
        batch, channels, height, width = x.shape
        padded = F.pad(x, (k // 2,) * 4, mode="replicate")
        weights = self.logits(x).softmax(dim=-1).to(x.dtype)
        # per input pixel, its C x k^2 neighbourhood times its k^2 x f^2 kernels
        pixels = padded_neighbourhoods(padded, k).reshape(-1, channels, k * k)
        if self.shared_kernels:  # one kernel set for every pixel: one matrix product
            learned = pixels @ weights[0, 0].T
        else:
            learned = torch.bmm(pixels, weights.reshape(-1, f * f, k * k).transpose(1, 2))
        learned = (learned.view(batch, height, width, channels, f, f)
                   .permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, height * f, width * f))
        mean = F.avg_pool2d(padded, k, stride=1)  # the 1 / k^2 kernel's reassembly
        fixed = resize(x, f) - F.interpolate(mean, scale_factor=f, mode="nearest")
        return learned + fixed  # (B, C, H f, W f)


@UPSAMPLERS.register("carafe")
class CarafeUpsampler(Reassembly):
    """CARAFE: reassembly kernels predicted from the input by a channel compressor and a
    content encoder (see the module docstring for what differs from the paper)."""

    def __init__(self, channels: int, factor: int, kernel_size: int = 5,
                 encoder_kernel_size: int = 3, compressed_channels: int = 64) -> None:
        super().__init__(channels, factor, kernel_size)
        if encoder_kernel_size < 1 or encoder_kernel_size % 2 == 0:
            raise BadValue("carafe encoder_kernel_size must be odd and positive, got "
                           f"{encoder_kernel_size}")
        if compressed_channels < 1:
            raise BadValue(f"carafe compressed_channels must be positive, got "
                           f"{compressed_channels}")
        compressed = min(compressed_channels, channels)
        self.compress = nn.Conv2d(channels, compressed, 1)
        self.encode = nn.Conv2d(compressed, factor**2 * kernel_size**2, encoder_kernel_size,
                                padding=encoder_kernel_size // 2)
        # zero logits: the kernel starts as bilinear; the weights still get gradients
        nn.init.zeros_(self.encode.weight)
        nn.init.zeros_(self.encode.bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        # The content encoder as one matrix product of unfolded neighbourhoods: its output
        # comes out as (B, H W, f^2 k^2), the layout forward reads, and on the CPU it is
        # 2.2x faster than the convolution at x32, whose f^2 k^2 = 25,600 output maps
        # of a few pixels each are a shape the convolution kernels are not made for.
        encoder_kernel = self.encode.kernel_size[0]
        columns = F.unfold(self.compress(x), encoder_kernel, padding=encoder_kernel // 2)
        logits = F.linear(columns.transpose(1, 2), self.encode.weight.flatten(1),
                          self.encode.bias)  # (B, H W, f^2 k^2)
        return logits.view(x.shape[0], -1, self.factor**2, self.kernel_size**2)


@UPSAMPLERS.register("carafe_static")
class StaticCarafeUpsampler(Reassembly):
    """CARAFE's reassembly with kernels that do not depend on the input: one learned
    ``k x k`` kernel per output phase, shared by every position and channel, in the same
    form ``bilinear + softmax(z) - 1 / k^2`` starting at bilinear (``z = 0``)."""

    shared_kernels = True

    def __init__(self, channels: int, factor: int, kernel_size: int = 5) -> None:
        super().__init__(channels, factor, kernel_size)
        self.phase_logits = nn.Parameter(torch.zeros(factor**2, kernel_size**2))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.phase_logits[None, None]  # (1, 1, f^2, k^2)
