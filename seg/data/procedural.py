"""Writing a procedural dataset in PASCAL VOC layout: what "shapes" and "scenes" share.
Each sample is drawn from its own seed ``(seed, split, index)``, so the output is
byte-identical for a given seed, whatever order or subset is generated."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from seg.data.palette import flat_palette

# (rng, image size) -> (RGB image (H, W, 3) uint8, label mask (H, W) uint8)
Render = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]

_SPLITS = {"train": 0, "val": 1}
_JPEG_QUALITY = 90
_PALETTE = flat_palette()


def sample_id(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def write_sample(root: Path, render: Render, split: str, index: int, size: int,
                 seed: int) -> str:
    """Draw sample ``index`` of ``split`` and write its JPEG and palette mask; its id."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLITS[split], index]))
    image, mask = render(rng, size)
    name = sample_id(split, index)
    # 4:4:4 chroma keeps thin colour-contrast strokes from being smeared by subsampling.
    Image.fromarray(image).save(
        root / "JPEGImages" / f"{name}.jpg", quality=_JPEG_QUALITY, subsampling=0
    )
    label = Image.fromarray(mask)
    label.putpalette(_PALETTE)  # turns the "L" image into a "P" image
    label.save(root / "SegmentationClass" / f"{name}.png")
    return name


def write_voc_dataset(root: str | Path, render: Render, num_train: int, num_val: int,
                      image_size: int, seed: int) -> Path:
    """Write ``num_train`` + ``num_val`` samples of ``render`` under ``root`` in PASCAL VOC
    layout: ``JPEGImages/<id>.jpg``, palette PNG masks ``SegmentationClass/<id>.png`` and
    ``ImageSets/Segmentation/{train,val}.txt``. Files with the same names are overwritten;
    the output depends only on the arguments. Returns ``root``."""
    root = Path(root)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cv2.setNumThreads(1)  # images are tiny; thread start-up would cost more than it saves
    for split, count in (("train", num_train), ("val", num_val)):
        ids = [write_sample(root, render, split, i, image_size, seed) for i in range(count)]
        list_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        list_file.write_text("".join(f"{name}\n" for name in ids))
    return root
