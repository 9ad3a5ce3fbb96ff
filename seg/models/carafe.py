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
from seg.models.upsamplers import register_upsampler


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


class Reassembly(nn.Module):
    """Base of both CARAFE upsamplers: each output pixel is its ``kernel_size``-square
    neighbourhood of the input (edge replicated) weighted by ``kernels(x)``."""

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

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """(B or 1, k^2, f^2, H or 1, W or 1): each output pixel's reassembly kernel."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        batch, channels, height, width = x.shape
        k, f = self.kernel_size, self.factor
        padded = F.pad(x, (k // 2,) * 4, mode="replicate")
        neighbourhood = F.unfold(padded, k).view(batch, channels, k * k, height, width)
        kernels = self.kernels(x).to(x.dtype)
        out = torch.einsum("bckhw,bkphw->bcphw", neighbourhood,
                           kernels.expand(batch, -1, -1, height, width))
        return F.pixel_shuffle(out.reshape(batch, channels * f * f, height, width), f)

    def with_bilinear(self, logits: torch.Tensor) -> torch.Tensor:
        """``bilinear + softmax(logits) - 1 / k^2`` over the taps (dim 1) of
        ``(B, k^2, f^2, H, W)`` logits: exactly bilinear while the logits are all zero."""
        uniform = 1.0 / self.kernel_size**2
        return self.bilinear[None, :, :, None, None] + (logits.softmax(dim=1) - uniform)


@register_upsampler("carafe")
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

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.encode(self.compress(x))  # (B, k^2 f^2, H, W), tap-major
        batch, _, height, width = logits.shape
        logits = logits.view(batch, self.kernel_size**2, self.factor**2, height, width)
        return self.with_bilinear(logits)


@register_upsampler("carafe_static")
class StaticCarafeUpsampler(Reassembly):
    """CARAFE's reassembly with kernels that do not depend on the input: one learned
    ``k x k`` kernel per output phase, shared by every position and channel, in the same
    form ``bilinear + softmax(z) - 1 / k^2`` starting at bilinear (``z = 0``)."""

    def __init__(self, channels: int, factor: int, kernel_size: int = 5) -> None:
        super().__init__(channels, factor, kernel_size)
        self.phase_logits = nn.Parameter(torch.zeros(kernel_size**2, factor**2))

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        return self.with_bilinear(self.phase_logits[None, :, :, None, None])
