"""DataLoader construction: resumable seeded shuffling, sharding across processes, batches
that leave out and report skipped samples, and worker counts sized to the machine."""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from seg.data.base import SegmentationDataset
from seg.data.cpus import available_cpus
from seg.data.labels import IGNORE_INDEX
from seg.data.sampler import ShardSampler, TrainSampler
from seg.errors import BadValue


def collate(items: list[dict], ignore_index: int = IGNORE_INDEX,
            image_fill: Sequence[float] = (0.0, 0.0, 0.0)) -> dict:
    """Batch items, padding mixed sizes at the bottom and right: images with ``image_fill``
    per channel (the mean colour, seg.data.pixels.mean_colour, which the model normalises
    to 0) and masks with ``ignore_index``, so padding never counts in loss or metrics.

    Items a dataset skipped (``{"skipped": message}``, see ``dataset.on_error``) are left
    out; their messages are in the batch's ``"skipped"`` list, which may be all it holds.
    """
    skipped = [item["skipped"] for item in items if "skipped" in item]
    items = [item for item in items if "skipped" not in item]
    if not items:
        return {"image": torch.empty(0, 3, 0, 0), "mask": torch.empty(0, 0, 0, dtype=torch.long),
                "id": [], "skipped": skipped}
    ids = [item["id"] for item in items]
    sizes = {tuple(item["image"].shape) for item in items}
    if len(sizes) == 1:  # training crops: one copy each, nothing to pad
        return {"image": torch.stack([item["image"] for item in items]),
                "mask": torch.stack([item["mask"] for item in items]), "id": ids,
                "skipped": skipped}
    height = max(item["image"].shape[-2] for item in items)
    width = max(item["image"].shape[-1] for item in items)
    images = items[0]["image"].new_empty(len(items), 3, height, width)
    images[:] = torch.tensor(image_fill, dtype=images.dtype).view(1, 3, 1, 1)
    masks = items[0]["mask"].new_full((len(items), height, width), ignore_index)
    for i, item in enumerate(items):
        h, w = item["mask"].shape
        images[i, :, :h, :w] = item["image"]
        masks[i, :h, :w] = item["mask"]
    return {"image": images, "mask": masks, "id": ids, "skipped": skipped}


def first_samples(dataset: SegmentationDataset, count: int) -> SegmentationDataset:
    """``dataset`` narrowed to its first ``count`` samples (a shallow copy; ``dataset``
    itself is unchanged): a quick validation on a few images (``dataset.val_max_batches``)."""
    if count >= len(dataset):
        return dataset
    narrowed = copy.copy(dataset)
    narrowed.samples = dataset.samples[:count]
    return narrowed


SMALL_CROP = 256  # pixels a side: below this, decoding a sample costs the CPU little


def resolve_num_workers(num_workers: int | str, device_type: str = "cuda",
                        crop_size: int | Sequence[int] | None = None) -> int:
    """``auto``: one worker per available CPU, at most 8 (decoding beyond that rarely
    keeps up with anything but many GPUs, and each worker holds its own memory). A run
    on the CPU with small crops decodes in the main process instead: there the workers
    would take cores from the model for work that costs little (on 2 cores, the shapes
    recipe trained at 138 images/s without workers, 112 with 2)."""
    if num_workers == "auto":
        side = crop_size if crop_size is None or isinstance(crop_size, int) else max(crop_size)
        small = side is not None and side <= SMALL_CROP
        return 0 if device_type == "cpu" and small else min(8, available_cpus())
    if not isinstance(num_workers, int) or num_workers < 0:
        raise BadValue(f"dataset.num_workers={num_workers!r}: use an integer >= 0 or auto")
    return num_workers


def build_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    num_workers: int | str = 0,
    seed: int = 0,
    pin_memory: bool = False,
    ignore_index: int = IGNORE_INDEX,
    rank: int = 0,
    world_size: int = 1,
    image_fill: Sequence[float] = (0.0, 0.0, 0.0),
) -> DataLoader:
    """Training loaders shuffle by (seed, epoch), seed each sample's augmentation and drop
    the last partial batch (see ``TrainSampler``); evaluation loaders keep every image, in
    order, and pad mixed sizes, images with ``image_fill`` (see ``collate``). With
    ``world_size`` processes each loads
    its own share; ``batch_size`` is per process.

    Workers persist across epochs (no restart cost, and cached samples stay) and each
    prefetches two batches, so a batch is always ready when the model wants one. A
    ``dataset.cache: auto`` split decides here, once, whether its workers cache.
    """
    if train and len(dataset) // world_size < batch_size:
        # every batch would be dropped, and training would wait forever for one
        raise BadValue(f"the training split has {len(dataset)} samples, fewer than one "
                       f"batch of {batch_size} per process: lower the batch size")
    if train:
        sampler = TrainSampler(len(dataset), seed, rank, world_size)
    else:
        sampler = ShardSampler(len(dataset), rank, world_size)
    workers = resolve_num_workers(num_workers)
    if isinstance(dataset, SegmentationDataset):
        dataset.plan_cache(workers)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=train,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
        collate_fn=functools.partial(collate, ignore_index=ignore_index,
                                     image_fill=tuple(image_fill)),
    )
