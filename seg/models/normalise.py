"""The input normalisation, the model's first step (as mmsegmentation's data
preprocessor): each channel's pixel values (0-255) shifted by 255 times its mean and
scaled by the inverse of 255 times its standard deviation, the statistics the encoder's
weights were trained with (its pretrained record, seg.models.encoders.Pretrained).

Training, evaluation, seg-predict and the ONNX graph all feed the model images as decoded
(uint8, or float of the same values) and share this one implementation. Its constants are
albumentations' (seg.data.pixels.normalisation_constants, in float32), so a uint8 image
gives bit for bit the values albumentations' ``Normalize`` gives (tests/test_normalise.py
checks every pixel value). Images of mixed sizes in one batch are padded with the mean
colour (seg.data.pixels.mean_colour), which normalises to exactly 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seg.data.pixels import IMAGENET_MEAN, IMAGENET_STD, normalisation_constants

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Normalise"]


class Normalise(nn.Module):
    """Images ``(B, 3, H, W)`` of 0-255 pixel values (uint8, or float) to the normalised
    float32 values the model was trained on: ``(x - offset) * scale`` per channel
    (seg.data.pixels.normalisation_constants), two float32 operations, as albumentations'
    lookup table computes each of its 256 entries."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        offset, scale = normalisation_constants(mean, std)
        # not in any state_dict: a checkpoint records mean and std as numbers of its own
        self.register_buffer("offset", torch.from_numpy(offset).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("scale", torch.from_numpy(scale).view(1, -1, 1, 1),
                             persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.offset) * self.scale  # (B, 3, H, W) float32
