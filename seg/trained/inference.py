"""How a trained model is applied to whole images: in one piece, by sliding windows, or
at several scales with flips (mmsegmentation's ``whole`` and ``slide`` modes, and its
test-time augmentation)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seg.errors import BadValue
from seg.settings import one_of, positive_ints

MODES = ("whole", "slide")
# test-time scales: mmsegmentation's are 0.5 to 1.75
MIN_SCALE, MAX_SCALE = 0.25, 4.0


@dataclass(frozen=True)
class Inference:
    """``mode``: ``whole`` (the image at once) or ``slide`` (windows of ``crop`` every
    ``stride`` pixels, the logits of overlapping windows averaged). ``scales`` and ``flip``
    add test-time augmentation: the class probabilities of every scale (and of its mirror
    image) are averaged at the input's size."""

    mode: str = "whole"
    crop: int | Sequence[int] = 512
    stride: int | Sequence[int] = 341
    scales: Sequence[float] = (1.0,)
    flip: bool = False

    def __post_init__(self) -> None:
        one_of(self.mode, "inference.mode", MODES)
        positive_ints(self.crop, "inference.crop")
        positive_ints(self.stride, "inference.stride")
        check_scales(self.scales)

    @property
    def augmented(self) -> bool:
        return self.flip or list(self.scales) != [1.0]

    def __call__(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, K, H, W)`` for ``images (B, 3, H, W)``: logits, or averaged class
        probabilities when augmented (argmax works on either)."""
        if not self.augmented:
            return self.single(model, images)
        height, width = images.shape[-2:]
        total = None
        for scale in self.scales:
            scaled = images if scale == 1.0 else F.interpolate(
                images, scale_factor=scale, mode="bilinear", align_corners=False)
            views = [(scaled, False), (scaled.flip(-1), True)] if self.flip else [(scaled, False)]
            for view, flipped in views:
                logits = self.single(model, view)
                if flipped:
                    logits = logits.flip(-1)
                if logits.shape[-2:] != (height, width):
                    logits = F.interpolate(logits, size=(height, width), mode="bilinear",
                                           align_corners=False)
                probabilities = logits.float().softmax(1)
                total = probabilities if total is None else total + probabilities
        return total / (len(self.scales) * (2 if self.flip else 1))

    def single(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model(images) if self.mode == "whole" else self.slide(model, images)

    def slide(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Windows of ``crop`` placed every ``stride`` pixels, the last flush with the
        image's edge (a window never leaves the image; an image smaller than the window is
        one window); each pixel's logits are the mean over the windows that hold it."""
        crop_h, crop_w = pair(self.crop)
        stride_h, stride_w = pair(self.stride)
        height, width = images.shape[-2:]
        total = counts = None
        for top in window_starts(height, crop_h, stride_h):
            for left in window_starts(width, crop_w, stride_w):
                window = images[..., top:top + crop_h, left:left + crop_w]
                logits = model(window)
                if total is None:
                    total = logits.new_zeros(*logits.shape[:2], height, width)
                    counts = logits.new_zeros(1, 1, height, width)
                total[..., top:top + crop_h, left:left + crop_w] += logits
                counts[..., top:top + crop_h, left:left + crop_w] += 1
        return total / counts


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed: Python's MemoryError, or torch's
    RuntimeError for the CPU ("can't allocate memory") or a GPU ("out of memory")."""
    if isinstance(error, MemoryError):
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in message or "can't allocate memory" in message)


def check_scales(scales: object) -> None:
    """One or more factors from MIN_SCALE to MAX_SCALE: a smaller one shrinks an image
    to nothing (an error deep in torch), a larger one takes the memory of a giant image."""
    numbers = isinstance(scales, Sequence) and not isinstance(scales, str) and all(
        isinstance(s, int | float) and not isinstance(s, bool) for s in scales)
    if not numbers or not scales or not all(MIN_SCALE <= s <= MAX_SCALE for s in scales):
        shown = list(scales) if isinstance(scales, Sequence) else scales
        raise BadValue(f"inference.scales={shown}: give one or more factors from "
                       f"{MIN_SCALE:g} to {MAX_SCALE:g}, e.g. [0.75, 1.0, 1.25]")


def pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Where windows of ``crop`` start along a side of ``size``, ``stride`` apart, the
    last one ending at the edge."""
    if size <= crop:
        return [0]
    starts = list(range(0, size - crop, stride))
    return [*starts, size - crop]
