"""The data the benchmarks measure on: generated image files (VOC-sized photos with their
palette masks, a folder of small images) and random batches held in memory."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from seg.data.palette import flat_palette
from seg.files import write_file, write_text

VOC_SIZES = ((500, 375), (375, 500), (500, 333), (500, 500))  # VOC's common (w, h)


def write_jpeg(path: Path, image: np.ndarray) -> None:
    """``image`` (float, 0-255) as a JPEG of quality 90, through seg.files."""
    pixels = image.clip(0, 255).astype(np.uint8)
    write_file(path, cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Random values on a coarse grid, upsampled smoothly: blobs of about size/cells."""
    coarse = rng.random((cells, cells * width // height + 1), dtype=np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def write_voc_like(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` VOC-sized samples in VOC layout: photo-like JPEGs (smooth regions, edges
    and sensor noise; about VOC's 100 kB per file) and 21-class palette masks, 255 outlines."""
    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for index in range(count):
        width, height = VOC_SIZES[index % len(VOC_SIZES)]
        regions = smooth_noise(rng, height, width, 4)
        mask = np.where(regions > 0.55, rng.integers(1, 21), 0).astype(np.uint8)
        outline = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((5, 5), np.uint8)) > 0
        colour = rng.integers(40, 215, (21, 3)).astype(np.float32)
        image = colour[mask] + 60 * (smooth_noise(rng, height, width, 16)[..., None] - 0.5)
        image += 40 * (smooth_noise(rng, height, width, 120)[..., None] - 0.5)  # texture
        image += rng.normal(0, 16, image.shape)
        mask[outline] = 255
        sample_id = f"2026_{index:06d}"
        write_jpeg(root / "JPEGImages" / f"{sample_id}.jpg", image)
        label = Image.fromarray(mask, mode="P")
        label.putpalette(flat_palette())
        write_file(root / "SegmentationClass" / f"{sample_id}.png",
                   lambda file, label=label: label.save(file, format="PNG"))
        ids.append(sample_id)
    write_text(root / "ImageSets" / "Segmentation" / "train.txt", "\n".join(ids) + "\n")
    return root


def write_small_folder(root: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` photo-like ``size``-px JPEGs with 3-class PNG masks, in the folder layout
    (images/, masks/, classes.yaml), every one in the train split."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    write_text(root / "classes.yaml",
               "classes:\n- {name: background}\n- {name: a}\n- {name: b}\n")
    for index in range(count):
        regions = smooth_noise(rng, size, size, 4)
        mask = np.digitize(regions, [0.4, 0.6]).astype(np.uint8)
        image = 80 * mask[..., None] + 120 * smooth_noise(rng, size, size, 16)[..., None]
        image = image + rng.normal(0, 12, (size, size, 3))
        write_jpeg(root / "images" / f"s{index:04d}.jpg", image)
        write_file(root / "masks" / f"s{index:04d}.png", cv2.imencode(".png", mask)[1].tobytes())
    names = "".join(f"s{index:04d}\n" for index in range(count))
    write_text(root / "splits" / "train.txt", names)
    write_text(root / "splits" / "val.txt", "s0000\n")
    return root


def random_batches(count: int, batch: int, size: int, classes: int, seed: int = 0,
                   pin: bool = False) -> list:
    """``count`` batches of random images and masks; ``pin``: in page-locked memory, as a
    CUDA DataLoader (pin_memory=True) hands them over."""
    generator = torch.Generator().manual_seed(seed)
    batches = [{"image": torch.randn(batch, 3, size, size, generator=generator),
                "mask": torch.randint(0, classes, (batch, size, size), generator=generator),
                "id": [str(i) for i in range(batch)]} for _ in range(count)]
    if pin:
        for item in batches:
            item["image"], item["mask"] = item["image"].pin_memory(), item["mask"].pin_memory()
    return batches
