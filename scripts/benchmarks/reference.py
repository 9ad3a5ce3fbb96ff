"""torchvision's references/segmentation, written out: its training transforms (presets.py
SegmentationPresetTrain, PIL backend), torchvision.datasets.VOCSegmentation's loading, the
reference's collate function and its criterion, so that the benchmarks measure seg beside
what a user of torchvision's reference scripts runs."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from seg.data.labels import IGNORE_INDEX
from seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def pad_if_smaller(image: Image.Image, size: int, fill: int = 0) -> Image.Image:
    from torchvision.transforms import functional as F

    width, height = image.size
    if min(width, height) >= size:
        return image
    return F.pad(image, [0, 0, max(size - width, 0), max(size - height, 0)], fill=fill)


class ReferenceTrainPreset:
    """references/segmentation/presets.py SegmentationPresetTrain (PIL backend)."""

    def __init__(self, base_size: int, crop_size: int) -> None:
        self.min_size, self.max_size = int(0.5 * base_size), int(2.0 * base_size)
        self.crop_size = crop_size

    def __call__(self, image: Image.Image, target: Image.Image) -> tuple:
        from torchvision import transforms as T
        from torchvision.transforms import functional as F

        size = random.randint(self.min_size, self.max_size)
        image = F.resize(image, size, antialias=True)
        target = F.resize(target, size, interpolation=T.InterpolationMode.NEAREST)
        if random.random() < 0.5:
            image, target = F.hflip(image), F.hflip(target)
        image = pad_if_smaller(image, self.crop_size)
        target = pad_if_smaller(target, self.crop_size, fill=255)
        crop = T.RandomCrop.get_params(image, (self.crop_size, self.crop_size))
        image, target = F.crop(image, *crop), F.crop(target, *crop)
        image = F.pil_to_tensor(image)
        target = torch.as_tensor(np.array(target), dtype=torch.int64)
        image = F.convert_image_dtype(image, torch.float)
        return F.normalize(image, mean=IMAGENET_MEAN, std=IMAGENET_STD), target


class ReferenceVOC(Dataset):
    """torchvision.datasets.VOCSegmentation's loading: PIL open, convert("RGB")."""

    def __init__(self, root: Path, transforms: Callable) -> None:
        self.root = root
        ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
        self.ids = ids
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple:
        image = Image.open(self.root / "JPEGImages" / f"{self.ids[index]}.jpg").convert("RGB")
        target = Image.open(self.root / "SegmentationClass" / f"{self.ids[index]}.png")
        return self.transforms(image, target)


def reference_collate(batch: list[tuple]) -> tuple:
    """references/segmentation/utils.py collate_fn (cat_list: pad to the largest)."""
    images, targets = zip(*batch, strict=True)

    def cat_list(tensors: Sequence[torch.Tensor], fill: int) -> torch.Tensor:
        shape = tuple(max(sizes) for sizes in zip(*[t.shape for t in tensors], strict=True))
        out = tensors[0].new_full((len(tensors), *shape), fill)
        for tensor, padded in zip(tensors, out, strict=True):
            padded[..., : tensor.shape[-2], : tensor.shape[-1]].copy_(tensor)
        return out

    return cat_list(images, 0), cat_list(targets, 255)


def reference_loader(root: Path, batch_size: int, workers: int, crop: int) -> DataLoader:
    """The reference's training loader on a VOC-layout folder, at ``crop`` crops."""
    dataset = ReferenceVOC(root, ReferenceTrainPreset(base_size=520, crop_size=crop))
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                      collate_fn=reference_collate, drop_last=True)


def reference_criterion(output, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; torchvision's dict output adds its auxiliary head's, weighted 0.5 as
    references/segmentation/train.py weights it."""
    loss = torch.nn.functional.cross_entropy
    if isinstance(output, dict):
        return (loss(output["out"], target, ignore_index=IGNORE_INDEX)
                + 0.5 * loss(output["aux"], target, ignore_index=IGNORE_INDEX))
    return loss(output, target, ignore_index=IGNORE_INDEX)
