"""``loader``: images/s of the VOC training recipe at 512 crop (seg's VOC reader and
albumentations pipeline, through ``seg.data.loader.build_loader``) beside a torchvision
reference-script style pipeline (PIL decode, PIL RandomResize, RandomHorizontalFlip,
RandomCrop, PILToTensor, ToDtype, Normalize; references/segmentation) on the same
generated VOC-sized files, the same number of workers and the same batch size."""

from __future__ import annotations

import tempfile
from pathlib import Path

from seg.data.loader import build_loader, resolve_num_workers
from seg.data.readers.voc import VOCSegmentation
from seg.data.transforms import train_transform

from .data import write_voc_like
from .harness import images_per_second, machine
from .reference import reference_loader


def run(images: int = 160, workers: int | str = "auto", batch_size: int = 8,
        crop: int = 512, files: int = 96) -> dict:
    """Our VOC recipe vs the reference pipeline on the same files; images/s of each."""
    workers = resolve_num_workers(workers)
    with tempfile.TemporaryDirectory() as folder:
        root = write_voc_like(Path(folder), files)
        ours = build_loader(
            VOCSegmentation(root, "train", transform=train_transform(
                crop, scale_range=(0.5, 2.0), base_size=512, color_jitter=0.0)),
            batch_size, train=True, num_workers=workers)
        reference = reference_loader(root, batch_size, workers, crop)
        ours_rate = images_per_second(ours, images)
        reference_rate = images_per_second(reference, images)
        del ours, reference  # stop the persistent workers before the folder goes
    return {"ours": ours_rate, "reference": reference_rate, "ratio": ours_rate / reference_rate,
            "workers": workers, "batch_size": batch_size, "crop": crop}


def report(result: dict) -> str:
    return "\n".join([
        f"Loader: VOC train recipe, {result['crop']} crop, batch {result['batch_size']}, "
        f"{result['workers']} workers ({machine()})",
        f"  seg (cv2 decode, albumentations):          {result['ours']:7.1f} images/s",
        f"  torchvision reference style (PIL):         {result['reference']:7.1f} images/s",
        f"  ratio:                                     {result['ratio']:7.2f}x",
    ])
