"""PASCAL VOC style segmentation dataset (also used for the generated "shapes" data)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

# OpenCV's own thread pool oversubscribes the CPU when DataLoader workers run in parallel.
cv2.setNumThreads(0)


class VOCSegmentation(Dataset):
    """Segmentation dataset in PASCAL VOC layout.

    Expects ``root/ImageSets/Segmentation/<split>.txt`` (one id per line),
    ``root/JPEGImages/<id>.jpg`` and ``root/SegmentationClass/<id>.png`` (palette PNG whose
    pixel values are class indices, 255 = ignore).

    Items are ``{"image": FloatTensor[3, H, W], "mask": LongTensor[H, W], "id": str}``.
    ``transform`` is an albumentations ``Compose`` called as
    ``transform(image=uint8 HWC RGB, mask=uint8 HW)`` that ends with normalisation and
    ``ToTensorV2``. Without a transform the image is scaled to [0, 1].

    ``cache`` keeps every decoded sample in memory after its first read:
    decoding is a third of the loading time of small images. Each DataLoader worker
    keeps its own cache, so it pays with ``num_workers=0`` or persistent workers.
    """

    def __init__(
        self, root: str | Path, split: str, transform: Callable | None = None,
        cache: bool = False,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root not found: {self.root}")
        list_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_file.is_file():
            raise FileNotFoundError(f"split file not found: {list_file}")
        lines = list_file.read_text().splitlines()
        self.ids: list[str] = [line.strip() for line in lines if line.strip()]

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, sample_id: str) -> Path:
        """Path of the JPEG image for ``sample_id``."""
        return self.root / "JPEGImages" / f"{sample_id}.jpg"

    def mask_path(self, sample_id: str) -> Path:
        """Path of the label PNG for ``sample_id``."""
        return self.root / "SegmentationClass" / f"{sample_id}.png"

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the raw ``(uint8 HWC RGB image, uint8 HW mask)`` pair, untransformed."""
        if self.cache is None:
            return self.decode(index)
        if index not in self.cache:
            self.cache[index] = self.decode(index)
        image, mask = self.cache[index]
        return image.copy(), mask.copy()  # copies: a transform may write into its input

    def decode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Read and check sample ``index`` from disk."""
        sample_id = self.ids[index]
        path = self.image_path(sample_id)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"could not read image: {path}")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        mask_path = self.mask_path(sample_id)
        with Image.open(mask_path) as label:
            # Palette ("P") and grayscale PNGs both give class indices directly.
            if label.mode not in ("P", "L"):
                raise ValueError(f"mask is mode {label.mode}, expected P or L: {mask_path}")
            mask = np.array(label, dtype=np.uint8)
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"image {image.shape[:2]} and mask {mask.shape} sizes differ for {sample_id}"
            )
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.load(index)
        if self.transform is None:
            image_t = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
            mask_t = torch.from_numpy(mask).long()
        else:
            out = self.transform(image=image, mask=mask)
            image_t = out["image"]
            if not isinstance(image_t, torch.Tensor):
                # Tolerate transforms without ToTensorV2: numpy HWC -> tensor CHW.
                image_t = torch.from_numpy(np.ascontiguousarray(image_t)).permute(2, 0, 1)
            image_t = image_t.float()
            mask_t = out["mask"]
            if not isinstance(mask_t, torch.Tensor):
                mask_t = torch.from_numpy(np.ascontiguousarray(mask_t))
            mask_t = mask_t.long()
        return {"image": image_t, "mask": mask_t, "id": self.ids[index]}
