"""SAPA (Lu, Liu, Ye, Fu, Liu and Cao, "SAPA: Similarity-Aware Point Affiliation for
Feature Upsampling", NeurIPS 2022): every output pixel is a weighted sum of the input
pixels around its source, weighted by a softmax of how similar each of them is to the
encoder's feature at the output pixel (the guide: the decoder's skip at the output's
resolution). ``sapa`` is the paper's SAPA-B, a low-rank bilinear similarity
``q(LN(guide_p)) . k(LN(x_t))`` with learned ``q``, ``k``; ``sapa_free`` its SAPA-I, with
no parameters at all: the adaptivity control.

This module also holds what the feature-guided upsamplers share
(:class:`GuidedReassembly`, fade builds on it): the kernel of output pixel ``p`` over
the 3 x 3 input neighbourhood of its source pixel is

    ``softmax_t(log w_r(t) + z(p, t))``

with ``w_r`` the weights bilinear interpolation (``align_corners=False``) gives tap ``t``
for the output pixel's phase ``r`` (``log 0 = -inf`` outside bilinear's support) and
``z`` the upsampler's logits. That is ``w_r(t) exp(z) / sum_t w_r(t) exp(z)``: bilinear
interpolation re-weighted by the similarity (joint bilateral upsampling with a bilinear
spatial kernel). Where ``z`` is the same for every tap (at initialisation, where the
learned part starts at zero; anywhere the guide is flat) the kernel *is* bilinear.

What differs from the paper, and why:

- The bilinear prior: the paper's kernel is ``softmax_t(z)`` over a 5 x 5 window. Here
  it is multiplied by bilinear's weights, so that a learned upsampler starts exactly as
  its fixed twin (issue 38), which no plain softmax of finite logits can do (bilinear
  gives most taps weight 0). The price: a kernel reaches only bilinear's taps (2 x 2 per
  output pixel for even factors; at odd factors the phase on the source pixel's centre
  has one tap per axis, so it is not adaptive along it), so the paper's window size
  ``k_up = 5`` is no option (its outer taps would be ``-inf`` everywhere) and the window
  is 3 x 3, the smallest that holds bilinear's support for every phase.
- The neighbourhood beyond the border repeats the edge pixel (the official CUDA op
  gives outside taps similarity 0 and value 0), as interpolation clamps at the edge.
- The query projection starts at zero (the paper: truncated normal, std 0.02) so that
  the similarity starts at 0; the key projection keeps the paper's initialisation, so
  the query's gradient is not zero at the start.
- Every integer factor, not only 2; plain PyTorch (``unfold``, ``softmax``) in place of
  the paper's CUDA ops, so it runs on the CPU, under bf16 autocast (the softmax in fp32)
  and in ONNX from opset 11, seg-export's lowest (LayerNorm is decomposed below opset 17;
  tests/test_guided_upsamplers.py checks onnxruntime against PyTorch).
- A step with no guide (FCN-32s, the last step to the image) is guided by the input
  upsampled bilinearly (``guide_channels`` None: the input's channels); the paper always
  has an encoder feature. Refusing would make ``model/upsampler=sapa`` need a second
  setting (``model.final_upsampler``) in every decoder.
- The guide may be smaller than the output by less than ``factor`` pixels (the skip of
  an odd-sized image, whose coarser map was rounded up): it is extended by repeating
  its last row and column.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seg.errors import BadValue
from seg.models.carafe import bilinear_reassembly_kernels, padded_neighbourhoods
from seg.models.phase_kernels import replicate_edges
from seg.models.upsamplers import UPSAMPLERS, resize

WINDOW = 3  # the neighbourhood: the smallest that holds bilinear's support at every phase


def log_bilinear_kernels(factor: int) -> torch.Tensor:
    """(f^2, 9): the log of bilinear interpolation's weights for the 3 x 3 neighbourhood
    of the source pixel, per output phase (row phase major), ``-inf`` where they are 0."""
    return bilinear_reassembly_kernels(factor, WINDOW).T.log()


def neighbourhoods(x: torch.Tensor) -> torch.Tensor:
    """(B, H W, C, 9): each pixel's 3 x 3 neighbourhood, the edge repeated beyond the
    border, taps in row-major order, in autocast's precision (see
    seg.models.carafe.padded_neighbourhoods)."""
    return padded_neighbourhoods(replicate_edges(x), WINDOW)


def phases_last(y: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, H f, W f) -> (B, H W, f^2, C): each output pixel filed under its source
    pixel and its phase (row phase major), the layout of the kernels."""
    batch, channels, height, width = y.shape
    rows, cols = height // factor, width // factor
    grouped = y.reshape(batch, channels, rows, factor, cols, factor)
    return grouped.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, factor**2, channels)


def reassemble(x: torch.Tensor, kernels: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, H f, W f): every output pixel, the 3 x 3 neighbourhood of its source pixel
    weighted by its kernel; ``kernels`` (B, H W, f^2, 9) as :func:`phases_last` files
    them."""
    batch, channels, height, width = x.shape
    # per source pixel, its C x 9 neighbourhood times its 9 x f^2 kernels
    out = neighbourhoods(x) @ kernels.to(x.dtype).transpose(-1, -2)  # (B, H W, C, f^2)
    out = out.view(batch, height, width, channels, factor, factor)
    return out.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, height * factor,
                                                 width * factor)  # (B, C, H f, W f)


def fit_guide(guide: torch.Tensor, height: int, width: int, factor: int) -> torch.Tensor:
    """The guide at exactly (height, width), the output's size: a guide smaller by less
    than ``factor`` (an odd-sized image's skip) gets its last rows and columns repeated."""
    missing_rows, missing_cols = height - guide.shape[-2], width - guide.shape[-1]
    if torch.onnx.is_in_onnx_export():  # the sizes are traced: pad by what is missing
        return F.pad(guide, (0, missing_cols, 0, missing_rows), mode="replicate")
    if not (0 <= missing_rows < factor and 0 <= missing_cols < factor):
        raise ValueError(f"a guide of {tuple(guide.shape[-2:])} pixels cannot guide an "
                         f"upsampling to {(height, width)}: it must be at most "
                         f"{factor - 1} pixels smaller, never larger")
    if missing_rows == missing_cols == 0:
        return guide
    return F.pad(guide, (0, missing_cols, 0, missing_rows), mode="replicate")


class GuidedReassembly(nn.Module):
    """Base of the feature-guided upsamplers (seg.models.upsamplers: ``guided = True``):
    kernels ``softmax(log bilinear + logits(x, guide))`` over each source pixel's 3 x 3
    neighbourhood (see the module docstring), the guide fitted to the output's size."""

    guided = True

    def __init__(self, channels: int, factor: int, guide_channels: int | None) -> None:
        super().__init__()
        self.channels = channels
        self.factor = factor
        # no guide: the step is guided by its own input, upsampled bilinearly
        self.guide_channels = channels if guide_channels is None else guide_channels
        self.log_bilinear: torch.Tensor
        self.register_buffer("log_bilinear", log_bilinear_kernels(factor), persistent=False)

    def logits(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """(B, H W, f^2, 9): the logit ``z`` of every tap of every output pixel."""
        raise NotImplementedError

    def guide_for(self, x: torch.Tensor, guide: torch.Tensor | None) -> torch.Tensor:
        """The guide at the output's size: the one given, or the input upsampled."""
        if guide is None:
            if self.guide_channels != self.channels:
                raise ValueError(f"this {type(self).__name__} was built for a guide of "
                                 f"{self.guide_channels} channels and got none")
            return resize(x, self.factor)
        height, width = x.shape[-2] * self.factor, x.shape[-1] * self.factor
        return fit_guide(guide, height, width, self.factor)

    def kernels(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """(B, H W, f^2, 9): every output pixel's kernel, in fp32 (the softmax of a bf16
        ``log w`` would not give back bilinear's weights)."""
        return (self.logits(x, guide).float() + self.log_bilinear).softmax(dim=-1)

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        guide = self.guide_for(x, guide)
        return reassemble(x, self.kernels(x, guide), self.factor)  # (B, C, H f, W f)


def channel_norm(x: torch.Tensor, norm: nn.LayerNorm | int) -> torch.Tensor:
    """(B, H, W, C): each pixel's feature vector layer-normalised, channels last (the
    paper's LayerNorm); ``norm`` the number of channels: without an affine part, as
    SAPA-I has none (a number the ONNX export keeps, not the traced size)."""
    pixels = x.permute(0, 2, 3, 1)  # (B, H, W, C)
    return norm(pixels) if isinstance(norm, nn.LayerNorm) else F.layer_norm(pixels, (norm,))


@UPSAMPLERS.register("sapa")
class SapaUpsampler(GuidedReassembly):
    """SAPA-B: the logit of tap ``t`` for output pixel ``p`` is the low-rank bilinear
    similarity ``q(LN(guide_p)) . k(LN(x_t))`` of ``embedding_dim`` (the paper's 64)
    dimensions; starts exactly as bilinear (``q`` starts at zero). See the module
    docstring for what differs from the paper."""

    def __init__(self, channels: int, factor: int, guide_channels: int | None = None,
                 embedding_dim: int = 64) -> None:
        super().__init__(channels, factor, guide_channels)
        if embedding_dim < 1:
            raise BadValue(f"sapa embedding_dim must be positive, got {embedding_dim}")
        self.norm_guide = nn.LayerNorm(self.guide_channels)
        self.norm_input = nn.LayerNorm(channels)
        self.query = nn.Linear(self.guide_channels, embedding_dim)
        self.key = nn.Linear(channels, embedding_dim)
        nn.init.trunc_normal_(self.key.weight, std=0.02)  # the paper's
        nn.init.zeros_(self.key.bias)
        # a zero query: similarity 0 at every tap, so the kernel starts as bilinear
        nn.init.zeros_(self.query.weight)
        nn.init.zeros_(self.query.bias)

    def logits(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        queries = self.query(channel_norm(guide, self.norm_guide))  # (B, H f, W f, d)
        queries = phases_last(queries.permute(0, 3, 1, 2), self.factor)  # (B, H W, f^2, d)
        keys = self.key(channel_norm(x, self.norm_input))  # (B, H, W, d)
        keys = neighbourhoods(keys.permute(0, 3, 1, 2))  # (B, H W, d, 9)
        return queries @ keys  # (B, H W, f^2, 9)


@UPSAMPLERS.register("sapa_free")
class ParameterFreeSapaUpsampler(GuidedReassembly):
    """SAPA-I, the adaptivity control: SAPA's kernel with a similarity that nothing
    learns, ``LN(guide_p) . LN(pool(guide)_t) / sqrt(C_guide)``; no parameters.

    It does *not* start as bilinear: it is bilinear only where the guide is flat (every
    tap equally similar) and sharpens across the guide's edges from the first step. That
    is the control it is for: does learning the similarity (``sapa``) beat a fixed
    feature-guided one?

    What differs from SAPA-I besides the module docstring's list: SAPA-I compares the
    encoder's feature with the decoder's (``LN(guide_p) . LN(x_t)``), which needs both to
    have as many channels, and a decoder step's input rarely has its skip's (class scores
    have K channels, the skip hundreds); with no parameters nothing can project one onto
    the other. So the decoder-side feature of tap ``t`` is the guide itself,
    average-pooled to the input's grid. The inner product is scaled by
    ``1 / sqrt(C_guide)``, as in attention: unscaled, layer-normalised vectors of a few
    hundred channels give logits of a few hundred, a hard arg-max over the taps.
    """

    def logits(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(guide, self.factor) if self.factor > 1 else guide
        channels = self.guide_channels
        queries = phases_last(channel_norm(guide, channels).permute(0, 3, 1, 2), self.factor)
        keys = neighbourhoods(channel_norm(pooled, channels).permute(0, 3, 1, 2))
        # (B, H W, f^2, C_g) @ (B, H W, C_g, 9)
        return (queries @ keys) * (1.0 / math.sqrt(self.guide_channels))  # (B, H W, f^2, 9)
