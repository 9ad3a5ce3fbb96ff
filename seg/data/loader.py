"""DataLoader construction: seeded shuffling and per-worker augmentation seeds."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info


def seed_worker_transform(worker_id: int) -> None:
    """Give each worker's albumentations pipeline its own seed, derived from the loader's.

    albumentations keeps a private random state, so seeding torch alone would
    leave augmentations irreproducible (or identical across workers).
    """
    info = get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(info.seed % 2**32)


def pad_collate(items: list[dict], ignore_index: int = 255) -> dict:
    """Batch items of different sizes: pad images (0) and masks (``ignore_index``) at the
    bottom and right to the largest, so padding never counts in loss or metrics."""
    height = max(item["image"].shape[-2] for item in items)
    width = max(item["image"].shape[-1] for item in items)
    images = items[0]["image"].new_zeros(len(items), 3, height, width)
    masks = items[0]["mask"].new_full((len(items), height, width), ignore_index)
    for i, item in enumerate(items):
        h, w = item["mask"].shape
        images[i, :, :h, :w] = item["image"]
        masks[i, :h, :w] = item["mask"]
    return {"image": images, "mask": masks, "id": [item["id"] for item in items]}


def build_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Training loaders shuffle with a seeded generator and drop the last partial batch;
    evaluation loaders keep every image and pad mixed sizes (see ``pad_collate``)."""
    if train and len(dataset) < batch_size:
        # every batch would be dropped, and training would wait forever for one
        raise ValueError(f"the training split has {len(dataset)} samples, fewer than one "
                         f"batch of {batch_size}: lower the batch size")
    generator = torch.Generator().manual_seed(seed)
    transform = getattr(dataset, "transform", None)
    if num_workers == 0 and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=seed_worker_transform,
        generator=generator,
        collate_fn=None if train else pad_collate,
    )
