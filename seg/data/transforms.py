"""Albumentations pipelines for training and evaluation.

Masks are only ever resized with nearest neighbour (class indices must not be blended) and
padded with 255, the ignore label, so padding never counts as background. Images leave
the pipelines as decoded, 0-255 (training's uint8, evaluation's float32): the model
normalises them itself (seg.models.normalise), whatever runs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from seg.data.decoding import image_size
from seg.data.labels import IGNORE_INDEX
from seg.data.pixels import IMAGENET_MEAN, IMAGENET_STD, mean_colour
from seg.errors import BadValue
from seg.settings import number_in, positive_int, positive_ints


def crop_shape(crop_size: object) -> tuple[int, int]:
    """``(height, width)`` of ``dataset.crop_size``, an int or a pair of positive ints."""
    size = positive_ints(crop_size, "dataset.crop_size")
    return size if isinstance(size, tuple) else (size, size)


LARGEST_AUTO_CROP = 512  # pixels a side: the crop of the VOC and ADE20K recipes
CROP_MULTIPLE = 32  # the encoders' coarsest stride: crops of whole feature cells


def auto_crop_size(image_sizes: Sequence[tuple[int, int]],
                   largest: int = LARGEST_AUTO_CROP) -> int:
    """``dataset.crop_size: auto``: the shortest side among ``image_sizes`` (``(height,
    width)`` pairs), down to a multiple of 32 and at most ``largest``, so that training
    crops fit the images instead of padding every one (a 512 crop of 192 px images is
    mostly padding, and 7 times the pixels to compute). ``largest`` without sizes."""
    if not image_sizes:
        return largest
    side = min(min(size) for size in image_sizes)
    return min(largest, side if side < CROP_MULTIPLE else side // CROP_MULTIPLE * CROP_MULTIPLE)


def sampled_image_sizes(paths: Sequence[Path], count: int = 32) -> list[tuple[int, int]]:
    """``(height, width)`` of up to ``count`` of ``paths``, spread evenly over them, read
    from the file headers (no decoding). A file PIL cannot read is left out: reading the
    samples reports it properly."""
    step = max(1, len(paths) // count)
    sizes = [image_size(path) for path in list(paths)[::step][:count]]
    return [size for size in sizes if size is not None]


def scale_bounds(scale_range: object) -> tuple[float, float]:
    """``(low, high)`` of ``dataset.scale_range``, with 0 < low <= high."""
    try:
        low, high = (float(bound) for bound in scale_range)
    except (TypeError, ValueError):  # not a pair of numbers
        low = high = float("nan")
    if not 0 < low <= high:  # false for nan too
        raise BadValue("dataset.scale_range must be [low, high] with 0 < low <= high, "
                       f"got {scale_range!r}")
    return low, high


def jitter_strength(color_jitter: object) -> float:
    """``dataset.color_jitter``, a number >= 0 (0: no jitter)."""
    if not isinstance(color_jitter, Real) or isinstance(color_jitter, bool) \
            or not color_jitter >= 0:
        raise BadValue(f"dataset.color_jitter must be a number >= 0, got {color_jitter!r}")
    return float(color_jitter)


class RandomShortSideScale(A.RandomScale):
    """Random rescale by a factor drawn from ``scale_range``, relative to the image's own
    size, or with ``base_size`` to a short side of ``base_size`` first (mmsegmentation's
    ``RandomResize(scale=(2048, 512), ratio_range=(0.5, 2.0))`` is ``base_size=512``)."""

    def __init__(self, scale_range: Sequence[float] = (0.5, 2.0), base_size: int | None = None,
                 ) -> None:
        low, high = scale_range
        # RandomScale samples from 1 + scale_limit, hence the -1.
        super().__init__(scale_limit=(low - 1.0, high - 1.0), interpolation=cv2.INTER_LINEAR,
                         mask_interpolation=cv2.INTER_NEAREST, p=1.0)
        self.base_size = base_size

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        if self.base_size is None:
            return {}
        height, width = params["shape"][:2]
        return {"scale": params["scale"] * self.base_size / min(height, width)}


LARGEST_ROTATION = 180.0  # degrees: a larger angle is one of these, turned the other way
# The Gaussian blur's odd kernel sides and sigmas (pixels): a slight defocus, not a smear
# that would wipe out 1-3 px structures.
BLUR_KERNELS = (3, 5)
BLUR_SIGMAS = (0.5, 1.5)


def probability(value: object, key: str) -> float:
    """``value`` if it is a number from 0 to 1: how often a random step happens."""
    return number_in(value, key, 0.0, 1.0)


def train_transform(
    crop_size: int | Sequence[int],
    scale_range: Sequence[float] = (0.5, 2.0),
    base_size: int | None = None,
    hflip: float = 0.5,
    color_jitter: float = 0.2,
    vflip: float = 0.0,
    rotation: float = 0.0,
    blur: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """Training augmentation: random scale, rotation, pad (black), random crop, flips,
    colour jitter, blur; the crops leave it as uint8 tensors ``(3, H, W)``, a quarter of
    float32's bytes. A step whose setting is 0 is left out, not run with probability 0:
    the other steps then draw the same random numbers as without it.

    The settings are checked first, so that a bad one is a one-line error naming its
    ``dataset.*`` key rather than albumentations' multi-line validation report.

    Args:
        crop_size: output size, an int or ``(height, width)``.
        scale_range: ``(min, max)`` factor for the random rescale (image bilinear,
            mask nearest).
        base_size: when set, the factor applies to a short side of ``base_size``
            instead of the image's own size.
        hflip: probability of a horizontal flip.
        color_jitter: brightness/contrast/saturation strength (hue gets a quarter of it),
            applied with probability 0.5; ``0`` disables it.
        vflip: probability of a vertical flip.
        rotation: largest angle (degrees) of a random rotation, drawn uniformly from
            ``[-rotation, rotation]`` for every sample (mask nearest; the corners it
            uncovers are ignored in the mask and the mean colour of ``mean`` and ``std``
            in the image, what normalises to 0).
        blur: probability of a slight Gaussian blur (kernels BLUR_KERNELS).
    """
    height, width = crop_shape(crop_size)
    steps: list = [
        RandomShortSideScale(scale_bounds(scale_range),
                             positive_int(base_size, "dataset.base_size", allow_none=True)),
        *rotation_steps(number_in(rotation, "dataset.rotation", 0.0, LARGEST_ROTATION),
                        mean, std),
        A.PadIfNeeded(
            min_height=height,
            min_width=width,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=IGNORE_INDEX,
        ),
        A.RandomCrop(height=height, width=width),
        *flip_steps(probability(hflip, "dataset.hflip"), probability(vflip, "dataset.vflip")),
        *photometric_steps(jitter_strength(color_jitter), probability(blur, "dataset.blur")),
        ToTensorV2(),
    ]
    return A.Compose(steps)


def rotation_steps(rotation: float, mean: Sequence[float], std: Sequence[float]) -> list:
    """A random rotation by up to ``rotation`` degrees either way; none for 0."""
    if rotation == 0:
        return []
    return [A.Rotate(limit=rotation, interpolation=cv2.INTER_LINEAR,
                     mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT,
                     fill=mean_colour(mean, std), fill_mask=IGNORE_INDEX, p=1.0)]


def flip_steps(hflip: float, vflip: float) -> list:
    """Horizontal then vertical flip, each with its probability; none at 0."""
    steps: list = []
    if hflip > 0:
        steps.append(A.HorizontalFlip(p=hflip))
    if vflip > 0:
        steps.append(A.VerticalFlip(p=vflip))
    return steps


def photometric_steps(color_jitter: float, blur: float) -> list:
    """Colour jitter (half the samples) and a slight Gaussian blur; each none at 0."""
    steps: list = []
    if color_jitter > 0:
        steps.append(
            A.ColorJitter(
                brightness=color_jitter,
                contrast=color_jitter,
                saturation=color_jitter,
                hue=min(0.5, color_jitter / 4),
                p=0.5,
            )
        )
    if blur > 0:
        steps.append(A.GaussianBlur(blur_limit=BLUR_KERNELS, sigma_limit=BLUR_SIGMAS, p=blur))
    return steps


# The dataset.* keys of the training augmentation, each a train_transform argument.
AUGMENTATION_KEYS = ("crop_size", "scale_range", "base_size", "hflip", "vflip", "rotation",
                     "blur", "color_jitter", "mean", "std")


def augmentation(data: Mapping) -> A.Compose:
    """The training augmentation that a dataset config's keys set (``dataset.*``; a key
    a config lacks keeps train_transform's default): what training and ``seg-data show``
    read samples through."""
    return train_transform(**{key: data[key] for key in AUGMENTATION_KEYS if key in data})


def eval_transform(
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    pad_to_multiple: int | None = None,
) -> A.Compose:
    """Evaluation pipeline: float32 pixels as decoded (0-255), optionally padded bottom and
    right to a multiple, to tensor.

    Padded image pixels are the mean colour of ``mean`` and ``std`` (what the model's
    normalisation maps to exactly 0), padded mask pixels 255 (ignored by the loss and the
    metrics).
    """
    steps: list = [A.ToFloat(max_value=1.0)]  # the same values, as float32
    if pad_to_multiple is not None and pad_to_multiple > 1:
        steps.append(
            A.PadIfNeeded(
                min_height=None,
                min_width=None,
                pad_height_divisor=pad_to_multiple,
                pad_width_divisor=pad_to_multiple,
                position="top_left",
                border_mode=cv2.BORDER_CONSTANT,
                fill=mean_colour(mean, std),
                fill_mask=IGNORE_INDEX,
            )
        )
    steps.append(ToTensorV2())
    return A.Compose(steps)
