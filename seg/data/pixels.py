"""What a pixel is worth: images are 8-bit RGB, and a model sees them normalised by the
statistics its encoder's weights were trained with (``(x - 255 mean) / (255 std)`` per
channel). The constants are computed here once, in float32 as albumentations' ``Normalize``
computes them, for the model's normalisation (seg.models.normalise) and for the loaders,
which pad images of mixed sizes with the mean colour (what normalises to exactly 0).
numpy only: no torch, no OpenCV."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


def mean_colour(mean: Sequence[float], std: Sequence[float]) -> tuple[float, ...]:
    """The pixel value per channel (0-255, float32) that normalises to exactly 0: what
    images of mixed sizes in one batch are padded with."""
    offset, _ = normalisation_constants(mean, std)
    return tuple(float(value) for value in offset)
