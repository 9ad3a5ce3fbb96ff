"""Datasets (VOC, VOC + SBD, Cityscapes, ADE20K, a folder; the embedded "shapes"
generator), colour palette and augmentation pipelines."""

from seg.data.ade20k import ADE20K
from seg.data.base import SampleError, SegmentationDataset
from seg.data.cityscapes import Cityscapes
from seg.data.folder import FolderSegmentation
from seg.data.palette import flat_palette, voc_palette
from seg.data.shapes import SHAPES_CLASSES, generate_shapes
from seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform
from seg.data.voc import VOCAugSegmentation, VOCSegmentation

__all__ = [
    "ADE20K",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SHAPES_CLASSES",
    "Cityscapes",
    "FolderSegmentation",
    "SampleError",
    "SegmentationDataset",
    "VOCAugSegmentation",
    "VOCSegmentation",
    "eval_transform",
    "flat_palette",
    "generate_shapes",
    "train_transform",
    "voc_palette",
]
