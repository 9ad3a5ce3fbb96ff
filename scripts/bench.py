"""Benchmarks, each a ratio of two pipelines measured side by side in one run.

    python scripts/bench.py loader [--images 160] [--workers auto]
    python scripts/bench.py all          # every benchmark; writes BENCHMARKS.md

``loader``: images/s of the VOC training recipe at 512 crop (seg's VOC reader and
albumentations pipeline, through ``seg.data.loader.build_loader``) beside a torchvision
reference-script style pipeline (PIL decode, PIL RandomResize, RandomHorizontalFlip,
RandomCrop, PILToTensor, ToDtype, Normalize; references/segmentation) on the same
generated VOC-sized files, the same number of workers and the same batch size.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from seg.data import VOCSegmentation, flat_palette, train_transform
from seg.data.loader import available_cpus, build_loader, resolve_num_workers
from seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD

VOC_SIZES = ((500, 375), (375, 500), (500, 333), (500, 500))  # VOC's common (w, h)


# -- data ---------------------------------------------------------------------------------


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
        cv2.imwrite(str(root / "JPEGImages" / f"{sample_id}.jpg"),
                    image.clip(0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        label = Image.fromarray(mask, mode="P")
        label.putpalette(flat_palette())
        label.save(root / "SegmentationClass" / f"{sample_id}.png")
        ids.append(sample_id)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    return root


# -- torchvision's references/segmentation, written out -------------------------------------


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
    dataset = ReferenceVOC(root, ReferenceTrainPreset(base_size=520, crop_size=crop))
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                      collate_fn=reference_collate, drop_last=True)


# -- measurement ----------------------------------------------------------------------------


def images_per_second(loader: DataLoader, images: int, warmup_batches: int = 2) -> float:
    """Steady-state throughput: worker start-up and the first batches are not counted."""
    batches = iter(loader)
    for _ in range(warmup_batches):
        next(batches)
    seen, start = 0, time.perf_counter()
    while seen < images:
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            continue
        seen += len(batch["mask"] if isinstance(batch, dict) else batch[1])
    return seen / (time.perf_counter() - start)


def bench_loader(images: int = 160, workers: int | str = "auto", batch_size: int = 8,
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


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {available_cpus()} CPUs, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def loader_report(result: dict) -> str:
    return "\n".join([
        f"Loader: VOC train recipe, {result['crop']} crop, batch {result['batch_size']}, "
        f"{result['workers']} workers ({machine()})",
        f"  seg (cv2 decode, albumentations):          {result['ours']:7.1f} images/s",
        f"  torchvision reference style (PIL):         {result['reference']:7.1f} images/s",
        f"  ratio:                                     {result['ratio']:7.2f}x  (target >= 1.5x)",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=("loader", "all"))
    parser.add_argument("--images", type=int, default=160, help="images timed per pipeline")
    parser.add_argument("--workers", default="auto", help="DataLoader workers (both sides)")
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"),
                        help="where `all` writes its report")
    args = parser.parse_args(argv)
    workers = args.workers if args.workers == "auto" else int(args.workers)
    report = loader_report(bench_loader(args.images, workers))
    print(report)
    if args.benchmark == "all":
        args.output.write_text("# Benchmarks\n\nWritten by `make bench` "
                               f"(`python scripts/bench.py all`).\n\n```\n{report}\n```\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
