"""Datasets, the embedded "shapes" generator, colour palette and augmentation pipelines."""

from seg.data.palette import flat_palette, voc_palette
from seg.data.shapes import SHAPES_CLASSES, generate_shapes
from seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform
from seg.data.voc import VOCSegmentation

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SHAPES_CLASSES",
    "VOCSegmentation",
    "eval_transform",
    "flat_palette",
    "generate_shapes",
    "train_transform",
    "voc_palette",
]
