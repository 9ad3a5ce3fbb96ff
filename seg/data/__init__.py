"""Datasets (VOC, VOC + SBD, Cityscapes, ADE20K, a folder; the embedded "shapes"
and "scenes" generators), colour palette and augmentation pipelines.

The names below are imported from their submodule on first use (PEP 562): most of those
import torch, OpenCV or albumentations, which ``import seg.data.resolvers`` (every
command, its --help too) need not wait for."""

from __future__ import annotations

import importlib

_SUBMODULE_OF = {
    "ADE20K": "ade20k",
    "IMAGENET_MEAN": "transforms",
    "IMAGENET_STD": "transforms",
    "SCENES_CLASSES": "scenes",
    "SHAPES_CLASSES": "shapes",
    "Cityscapes": "cityscapes",
    "FolderSegmentation": "folder",
    "SampleError": "base",
    "SegmentationDataset": "base",
    "VOCAugSegmentation": "voc",
    "VOCSegmentation": "voc",
    "eval_transform": "transforms",
    "flat_palette": "palette",
    "generate_scenes": "scenes",
    "generate_shapes": "shapes",
    "train_transform": "transforms",
    "voc_palette": "palette",
}

__all__ = list(_SUBMODULE_OF)


def __getattr__(name: str) -> object:
    if name not in _SUBMODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SUBMODULE_OF[name]}"), name)
    globals()[name] = value  # found directly from now on
    return value
