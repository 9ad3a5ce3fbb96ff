"""Writing a procedural dataset in PASCAL VOC layout: what "shapes" and "scenes" share.
Each sample is drawn from its own seed ``(seed, split, index)``, so the output is
byte-identical for a given seed, whatever order or subset is generated."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from seg.data.cpus import available_cpus
from seg.data.palette import flat_palette
from seg.files import write_file, write_text

# (rng, image size) -> (RGB image (H, W, 3) uint8, label mask (H, W) uint8)
Render = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]

_SPLITS = {"train": 0, "val": 1}
_JPEG_QUALITY = 90
_PALETTE = flat_palette()
# Fewer samples are drawn in this process: starting workers would cost more than it saves.
_PARALLEL_FROM = 64


def sample_id(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def write_sample(root: Path, render: Render, split: str, index: int, size: int,
                 seed: int) -> str:
    """Draw sample ``index`` of ``split`` and write its JPEG and palette mask; its id."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLITS[split], index]))
    image, mask = render(rng, size)
    name = sample_id(split, index)
    # 4:4:4 chroma keeps thin colour-contrast strokes from being smeared by subsampling.
    write_file(root / "JPEGImages" / f"{name}.jpg", lambda file: Image.fromarray(image).save(
        file, format="JPEG", quality=_JPEG_QUALITY, subsampling=0), sync=False)
    label = Image.fromarray(mask)
    label.putpalette(_PALETTE)  # turns the "L" image into a "P" image
    write_file(root / "SegmentationClass" / f"{name}.png",
               lambda file: label.save(file, format="PNG"), sync=False)
    return name


def write_voc_dataset(root: str | Path, render: Render, num_train: int, num_val: int,
                      image_size: int, seed: int, workers: int | None = None) -> Path:
    """Write ``num_train`` + ``num_val`` samples of ``render`` under ``root`` in PASCAL VOC
    layout: ``JPEGImages/<id>.jpg``, palette PNG masks ``SegmentationClass/<id>.png`` and
    ``ImageSets/Segmentation/{train,val}.txt``. Files with the same names are overwritten;
    the output depends only on the arguments, not on ``workers``, the processes that draw
    (None: one per available CPU, up to 8, for 64 samples or more). Returns ``root``."""
    root = Path(root)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cv2.setNumThreads(1)  # images are tiny; thread start-up would cost more than it saves
    if workers is None:
        workers = min(available_cpus(), 8) if num_train + num_val >= _PARALLEL_FROM else 1
    # One sample per task, each from its own seed: the files are the same for any
    # number of workers (make train's data on 2 cores: 8.5 s in one process, 5 s in two).
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        for split, count in (("train", num_train), ("val", num_val)):
            draw = partial(write_sample, root, render, split, size=image_size, seed=seed)
            drawn = pool.map(draw, range(count), chunksize=16) if pool else map(draw, range(count))
            list_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
            write_text(list_file, "".join(f"{name}\n" for name in drawn))
    finally:
        if pool:
            pool.shutdown()
    return root
