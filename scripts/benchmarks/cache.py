"""``cache``: samples/s per epoch of a folder dataset of small images (300 JPEGs of 128
px) through the training recipe, one process, batch 8, with ``dataset.cache`` false and
``auto``: what keeping the decoded samples in memory saves from the second epoch on."""

from __future__ import annotations

import tempfile
from pathlib import Path

from seg.data.cpus import available_cpus
from seg.data.loader import build_loader
from seg.data.transforms import train_transform

from .data import write_small_folder
from .harness import cpu_name, epoch_rate


def run(images: int = 300, size: int = 128, epochs: int = 3) -> dict:
    """Samples/s per epoch of a folder dataset of small images through the training
    recipe (crop ``size``, one process, batch 8), with ``cache=False`` and ``"auto"``."""
    from seg.data.readers.folder import FolderSegmentation

    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        root = write_small_folder(Path(folder) / "folder", images, size)
        for mode in (False, "auto"):
            dataset = FolderSegmentation(root, "train", cache=mode, transform=train_transform(
                size, scale_range=(0.5, 2.0), base_size=size, color_jitter=0.0))
            loader = build_loader(dataset, 8, train=True, num_workers=0)
            rates[str(mode).lower()] = [epoch_rate(loader, epoch) for epoch in range(epochs)]
    return {"images": images, "size": size, "rates": rates}


def report(result: dict) -> str:
    lines = [f"dataset.cache: a folder of {result['images']} JPEGs of {result['size']} px, "
             "the training recipe, one process (num_workers=0), batch 8; samples/s per epoch "
             f"({cpu_name()}, {available_cpus()} cores)"]
    for mode, rates in result["rates"].items():
        lines.append(f"  cache={mode:5s} " + "  ".join(f"epoch {i + 1}: {rate:6.0f}"
                                                   for i, rate in enumerate(rates)))
    return "\n".join(lines)
