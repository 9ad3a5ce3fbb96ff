"""DySample (Liu, Lu, Fu and Cao, "Learning to Upsample by Learning to Sample", ICCV 2023):
upsampling by sampling the input at learned, content-dependent points.

Each output pixel reads the input bilinearly (``grid_sample``) at the point where plain
bilinear interpolation would read it, moved by an offset predicted from the input: a
1 x 1 convolution to ``2 g f^2`` maps, pixel-shuffled into one (x, y) offset per output
pixel and channel group. ``dysample_static`` learns one offset per output phase and
group that every position shares: the control for "content-aware", with the same
sampling and fewer parameters.

What differs from the paper's reference code, and why:

- The offsets start at exactly zero (zero weights and bias; the paper draws the weights
  from N(0, 0.001)), so that at initialisation the output *is* bilinear interpolation
  (``F.interpolate``, ``align_corners=False``), borders included (``padding_mode=
  "border"`` clamps as interpolation does). The weights still receive gradients at the
  first step: they multiply the input, which is not zero.
- ``groups`` defaults to 1, not 4: the input here is a class-score map, whose channel
  count (the number of classes) is rarely a multiple of 4.
- Only the paper's "LP" form (offsets predicted at the input resolution, then shuffled)
  and its two scopes: the static factor 0.25 (``scope``), or ``dynamic_scope``,
  ``0.5 sigmoid(conv(x))`` per offset.
- Every integer factor, not only 2: the offsets are pixel-shuffled by ``f``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seg.errors import BadValue
from seg.models.upsamplers import UPSAMPLERS


class PointSampler(nn.Module):
    """Base of both DySample upsamplers: bilinear sampling of the input at the points of
    bilinear interpolation moved by ``offsets(x)``, in input pixels."""

    def __init__(self, channels: int, factor: int, groups: int) -> None:
        super().__init__()
        if groups < 1 or channels % groups:
            raise BadValue(f"dysample groups={groups} must divide the {channels} channels "
                           "it upsamples (the number of classes)")
        self.channels = channels
        self.factor = factor
        self.groups = groups

    def offsets(self, x: torch.Tensor) -> torch.Tensor:
        """(B or 1, groups, 2, H f, W f): each output pixel's (x, y) offset, in input pixels."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        batch, channels, height, width = x.shape
        offsets = self.offsets(x).float()
        # where bilinear interpolation reads output pixel o, in grid_sample's [-1, 1]
        # coordinates (align_corners=False): (2 o + 1) / (f n) - 1; an offset of d input
        # pixels moves it by 2 d / n
        base_x = (2 * torch.arange(width * self.factor, device=x.device) + 1) / (
            width * self.factor) - 1
        base_y = (2 * torch.arange(height * self.factor, device=x.device) + 1) / (
            height * self.factor) - 1
        grid_x = base_x + offsets[:, :, 0] * (2 / width)  # (B, g, H f, W f)
        grid_y = base_y[:, None] + offsets[:, :, 1] * (2 / height)
        grid = torch.stack([grid_x, grid_y], dim=-1).expand(batch, -1, -1, -1, -1)
        grid = grid.reshape(batch * self.groups, height * self.factor, width * self.factor, 2)
        grouped = x.reshape(batch * self.groups, channels // self.groups, height, width)
        sampled = F.grid_sample(grouped.float(), grid, mode="bilinear",
                                padding_mode="border", align_corners=False)
        return sampled.view(batch, channels, height * self.factor, width * self.factor).to(
            x.dtype)


@UPSAMPLERS.register("dysample")
class DySampleUpsampler(PointSampler):
    """DySample, "LP" form: offsets ``scope * conv1x1(x)`` pixel-shuffled to the output
    (see the module docstring for what differs from the paper). ``scope`` is the paper's
    static factor 0.25; ``dynamic_scope=True`` replaces it by ``0.5 sigmoid(conv1x1(x))``
    per offset (the paper's DySample+)."""

    def __init__(self, channels: int, factor: int, groups: int = 1, scope: float = 0.25,
                 dynamic_scope: bool = False) -> None:
        super().__init__(channels, factor, groups)
        if not scope > 0:
            raise BadValue(f"dysample scope must be positive, got {scope}")
        self.scope = scope
        offset_maps = 2 * groups * factor**2
        self.offset = nn.Conv2d(channels, offset_maps, 1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.dynamic_scope = nn.Conv2d(channels, offset_maps, 1) if dynamic_scope else None
        if self.dynamic_scope is not None:
            # the paper's zero init: 0.5 sigmoid(0) = 0.25, the static scope
            nn.init.zeros_(self.dynamic_scope.weight)
            nn.init.zeros_(self.dynamic_scope.bias)
        self.shuffle = nn.PixelShuffle(factor)

    def offsets(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.offset(x)  # (B, g 2 f^2, H, W)
        if self.dynamic_scope is None:
            raw = raw * self.scope
        else:
            raw = raw * (0.5 * torch.sigmoid(self.dynamic_scope(x)))
        shuffled = self.shuffle(raw)  # (B, g 2, H f, W f)
        return shuffled.view(x.shape[0], self.groups, 2, *shuffled.shape[-2:])


@UPSAMPLERS.register("dysample_static")
class StaticDySampleUpsampler(PointSampler):
    """DySample's sampling with offsets that do not depend on the input: one learned
    (x, y) offset per output phase and channel group, the same at every position,
    starting at zero (bilinear). The control that tells "content-aware" from "a learned
    resampling pattern"."""

    def __init__(self, channels: int, factor: int, groups: int = 1) -> None:
        super().__init__(channels, factor, groups)
        self.phase_offsets = nn.Parameter(torch.zeros(groups, 2, factor, factor))

    def offsets(self, x: torch.Tensor) -> torch.Tensor:
        # output pixel i f + r is phase r of input pixel i: the phases tile the output
        tiled = self.phase_offsets.repeat(1, 1, x.shape[-2], x.shape[-1])
        return tiled[None]  # (1, g, 2, H f, W f)
