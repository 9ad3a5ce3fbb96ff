"""The input normalisation: each channel's pixel values (0-255) shifted by 255 times its
mean and scaled by the inverse of 255 times its standard deviation, the statistics the
encoder's weights were trained with (its pretrained record, seg.models.encoders.Pretrained).

:class:`Normalise` is the one implementation that seg-predict and the ONNX graph share.
Training and seg-eval normalise in their data loader instead (albumentations' ``Normalize``,
seg/data/transforms.py), with the same numbers: :func:`normalisation_constants` computes
them as albumentations does, in float32, so that a uint8 image gives bit for bit the values
training gave the model (tests/test_normalise.py checks every pixel value). They stay
there because the loader pads: a training crop is padded with black before it is
normalised, a validation batch of mixed sizes with the mean colour after; a model that
normalised its input could no longer tell the two apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

# ImageNet's statistics (RGB, 0-1): what torchvision's weights and most of timm's were
# trained with, and the normalisation of an encoder that publishes no weights.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
PIXEL_MAX = 255.0  # images are 8-bit: mean and std are fractions of it


def normalisation_constants(mean: Sequence[float], std: Sequence[float]
                            ) -> tuple[np.ndarray, np.ndarray]:
    """``(offset, scale)`` per channel, float32: ``255 mean`` and ``1 / (255 std)``, each
    rounded as albumentations' ``Normalize(mean, std)`` rounds them."""
    offset = np.asarray(mean, dtype=np.float32) * np.float32(PIXEL_MAX)
    scale = np.reciprocal(np.asarray(std, dtype=np.float32) * np.float32(PIXEL_MAX))
    return offset, scale


class Normalise(nn.Module):
    """Images ``(B, 3, H, W)`` of 0-255 pixel values (uint8, or float) to the normalised
    float32 values the model was trained on: ``(x - offset) * scale`` per channel
    (:func:`normalisation_constants`), two float32 operations, as the training loader's
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
