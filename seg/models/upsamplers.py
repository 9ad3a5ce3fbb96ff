"""Upsamplers: modules that enlarge a feature map by an integer factor.

Every upsampler maps ``(B, C, H, W) -> (B, C, H * factor, W * factor)``, so the
decoder can swap them freely. They are built by name from one catalogue:
``build_upsampler("transposed", channels=21, factor=2)``. This module holds the
catalogue, the fixed ``bilinear`` baseline and what the learned ones share; each family
of learned upsampler registers itself in its own module (transposed, resize_conv,
pixel_shuffle, dysample, carafe), the phase kernels that make them fast are in
phase_kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seg.catalogue import Catalogue
from seg.errors import BadValue

UPSAMPLERS = Catalogue("upsampler", given=("channels", "factor", "guide_channels"))


def kernel_drift(upsampler: nn.Module) -> float | None:
    """``||W - W0|| / ||W0||``: how far learning moved a learned upsampler's kernel from
    its initial (fixed-equivalent) kernel ``W0``; None for upsamplers with no kernel."""
    initial = getattr(upsampler, "initial_weight", None)
    if initial is None:
        return None
    moved = upsampler.weight.detach() - initial
    return float(moved.norm() / initial.norm())


def build_upsampler(name: str, channels: int, factor: int, guide_channels: int | None = None,
                    **options) -> nn.Module:
    """Build the upsampler registered as ``name`` for ``channels`` maps and ``factor``.
    ``guide_channels``: the channels of the feature map at the output's resolution that a
    decoder step can hand a feature-guided upsampler (SAPA, FADE: ``guided = True``) as
    its guide; None where the step has none. Other upsamplers never see it."""
    entry = UPSAMPLERS.entry(name)
    if not isinstance(factor, int) or factor < 1:
        raise BadValue(f"upsampling factor must be a positive integer, got {factor!r}")
    if is_guided(entry.builder):
        options["guide_channels"] = guide_channels
    # A private RNG: building any upsampler leaves the global random state, and so every
    # other weight of the model, exactly as it was; comparisons differ only here.
    with torch.random.fork_rng(devices=[]):
        return UPSAMPLERS.build(name, channels=channels, factor=factor, **options)


def is_guided(upsampler: object) -> bool:
    """Whether an upsampler (class or module) takes a guide: ``forward(x, guide)``."""
    return bool(getattr(upsampler, "guided", False))


def upsample(step: nn.Module, x: torch.Tensor, guide: torch.Tensor | None = None
             ) -> torch.Tensor:
    """Apply an upsampling step: a feature-guided one with ``guide`` (the feature map at
    the output's resolution, or None), any other to ``x`` alone."""
    return step(x, guide) if is_guided(step) else step(x)


def resize(x: torch.Tensor, factor: int, mode: str = "bilinear") -> torch.Tensor:
    """Fixed resizing by ``factor``: bilinear (align_corners=False) or nearest."""
    if factor == 1:
        return x
    align_corners = False if mode == "bilinear" else None
    return F.interpolate(x, scale_factor=factor, mode=mode, align_corners=align_corners)


@UPSAMPLERS.register("nearest")
class NearestUpsampler(nn.Module):
    """Fixed nearest-neighbour resizing (each pixel repeated ``factor`` times each way): the
    up-step of segmentation_models_pytorch's U-Net; no parameters."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.channels = channels
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize(x, self.factor, mode="nearest")


@UPSAMPLERS.register("bilinear")
class BilinearUpsampler(nn.Module):
    """Fixed bilinear resizing, ``F.interpolate(align_corners=False)``; no parameters."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.channels = channels
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize(x, self.factor)


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
