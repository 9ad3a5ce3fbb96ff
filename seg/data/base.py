"""What every segmentation dataset shares: label mapping, caching and what to do with a
bad sample, over the checked decoding of seg.data.decoding.

A reader (VOC, Cityscapes, ADE20K, a folder) only lists its samples and says how its raw
label values map to class indices; decoding and every check live in the dataset class and
seg.data.decoding, so that a bad file gives the same one-line error whatever the layout.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from seg.data.cache import (
    MB,
    cache_budget_bytes,
    cache_budget_setting,
    cache_copies,
    cache_mode,
    decoded_bytes,
)
from seg.data.decoding import (
    MAX_IMAGE_PIXELS,
    SampleError,
    configure_decoders,
    describe_values,
    exif_note,
    image_size,
    read_image,
    read_label_image,
)
from seg.data.labels import IGNORE_INDEX
from seg.errors import BadValue, IsAFolder, MissingPath, NotAFolder, UserError
from seg.files import read_run_text
from seg.settings import positive_int
from seg.text import printable

log = logging.getLogger("seg.data")

ON_ERROR = ("raise", "skip")
# A split list lists ids: kilobytes, a few MB for the largest datasets.
MAX_SPLIT_LIST_BYTES = 64 << 20


@dataclass(frozen=True)
class Sample:
    """One image and its label file."""

    id: str
    image: Path
    mask: Path


def class_lut(num_classes: int, raw_to_class: dict[int, int] | None = None) -> np.ndarray:
    """A 256-entry table from raw mask value to class index: -1 marks a value the dataset
    never uses. By default ``0..C-1`` map to themselves and 255 is ignored."""
    lut = np.full(256, -1, dtype=np.int16)
    if raw_to_class is None:
        raw_to_class = {value: value for value in range(num_classes)}
        raw_to_class[IGNORE_INDEX] = IGNORE_INDEX
    for raw, index in raw_to_class.items():
        lut[raw] = index
    return lut


class ReadOptions(TypedDict, total=False):
    """What every reader passes on to :class:`SegmentationDataset` unchanged."""

    cache: bool | str
    on_error: str
    max_image_pixels: int
    cache_budget_mb: int | str


class SegmentationDataset(Dataset):
    """Samples of (image, label file), decoded, checked and mapped to class indices.

    Items are ``{"image": FloatTensor[3, H, W], "mask": LongTensor[H, W], "id": str}``.
    ``transform`` is an albumentations ``Compose`` called as
    ``transform(image=uint8 HWC RGB, mask=uint8 HW)`` that ends with normalisation and
    ``ToTensorV2``. Without a transform the image is scaled to [0, 1].

    Every decoded mask is checked: same size as its image and no value outside the
    dataset's labels (``label_map``). A bad sample raises :class:`SampleError`; with
    ``on_error="skip"`` the item is instead ``{"skipped": message}``, which
    :func:`seg.data.loader.collate` leaves out of the batch and reports.

    ``cache=True`` keeps every decoded sample in memory after its first read: decoding is
    a third of the loading time of small images. Each DataLoader worker keeps its own
    cache, so it pays with ``num_workers=0`` or persistent workers. ``cache="auto"`` does
    so when all those copies fit ``cache_budget_mb`` (MB, or ``"auto"``: a quarter of the
    available memory, at most 4096 MB), decided from the image headers on the first read
    or by :meth:`plan_cache` (see ``seg.data.cache``).

    An image or mask of more than ``max_image_pixels`` pixels is a bad sample, found from
    its header before it is decoded. ``source`` (the split list, or what the samples were
    found in) names the split in messages.
    """

    #: what the raw label values mean, for error messages
    label_description = "class indices"

    def __init__(
        self,
        samples: Sequence[Sample],
        num_classes: int,
        transform: Callable | None = None,
        *,
        label_map: np.ndarray | None = None,
        source: str = "",
        cache: bool | str = False,
        on_error: str = "raise",
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        cache_budget_mb: int | str = "auto",
    ) -> None:
        configure_decoders()  # before the loader's workers fork: they inherit the settings
        if on_error not in ON_ERROR:
            raise BadValue(f"dataset.on_error={on_error!r}: use one of {', '.join(ON_ERROR)}")
        self.max_image_pixels = positive_int(max_image_pixels, "dataset.max_image_pixels")
        self.source = printable(source or "the dataset")  # for messages: escaped
        if not samples:
            raise BadValue(f"{self.source} lists no samples: check the split name and the "
                           "dataset.root folder")
        self.samples = list(samples)
        self.num_classes = num_classes
        self.transform = transform
        self.on_error = on_error
        self.label_map = class_lut(num_classes) if label_map is None else label_map
        self.cache_budget_mb = cache_budget_setting(cache_budget_mb)
        mode = cache_mode(cache)
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if mode is True else None
        self.cache_planned = mode != "auto"  # auto: decided on the first read

    @property
    def ids(self) -> list[str]:
        return [sample.id for sample in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def plan_cache(self, workers: int = 0) -> None:
        """``cache="auto"``: keep the decoded samples in memory if the copies that ``workers``
        DataLoader workers (0: the main process) will hold fit the budget. Called before
        the workers start, so that they inherit the decision; the first call decides."""
        if self.cache_planned:
            return
        self.cache_planned = True
        copies, budget = cache_copies(workers), cache_budget_bytes(self.cache_budget_mb)
        needed = decoded_bytes(map(image_size, (s.image for s in self.samples)),
                               budget // copies)
        fits = needed * copies <= budget
        self.cache = {} if fits else None
        if fits:
            log.info("dataset.cache=auto: keeping the decoded samples of %s in memory "
                     "(%.1f MB per copy, copies: %d, budget: %.0f MB)",
                     self.source, needed / MB, copies, budget / MB)
        else:
            log.info("dataset.cache=auto: decoding %s at every read: its decoded samples "
                     "(copies: %d) would take over the budget of %.0f MB "
                     "(dataset.cache_budget_mb)", self.source, copies, budget / MB)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the checked ``(uint8 HWC RGB image, uint8 HW class mask)``, untransformed."""
        if not self.cache_planned:  # not planned before the workers started
            info = get_worker_info()
            self.plan_cache(info.num_workers if info is not None else 0)
        if self.cache is None:
            return self.decode(index)
        if index not in self.cache:
            self.cache[index] = self.decode(index)
        image, mask = self.cache[index]
        return image.copy(), mask.copy()  # copies: a transform may write into its input

    def decode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Read sample ``index`` from disk, check it and map its labels to class indices."""
        sample = self.samples[index]
        image = read_image(sample.image, self.max_image_pixels)
        raw = self.read_mask(sample.mask)
        if raw.shape[:2] != image.shape[:2]:
            raise SampleError(
                f"{printable(sample.mask)}: mask is {raw.shape[1]}x{raw.shape[0]} but its "
                f"image {printable(sample.image.name)} is {image.shape[1]}x{image.shape[0]}; "
                f"they must match{exif_note(sample.image)}")
        return image, self.map_labels(raw, sample.mask)

    def read_mask(self, path: Path) -> np.ndarray:
        """The raw label values of ``path`` (HW uint8). Readers of other formats override it."""
        mask = read_label_image(path, self.max_image_pixels)
        if mask.ndim == 3:
            raise SampleError(f"{printable(path)}: RGB colour mask where {self.label_description} "
                              "were expected; save it as an index (P or L mode) PNG")
        return mask

    def labels_of(self, path: Path) -> tuple[np.ndarray, str]:
        """The raw value -> class table for the mask at ``path``, and what its values mean."""
        return self.label_map, self.label_description

    def map_labels(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Map raw values to class indices; a value the dataset does not use is an error."""
        label_map, meaning = self.labels_of(path)
        counts = np.bincount(raw.ravel(), minlength=256)
        unknown = np.flatnonzero((counts > 0) & (label_map < 0))
        if unknown.size:
            raise SampleError(
                f"{printable(path)}: label values {describe_values(unknown)} are not {meaning} "
                f"(allowed: {compact_ranges(np.flatnonzero(label_map >= 0))}); fix the mask "
                "or set dataset.on_error=skip"
            )
        known = label_map >= 0
        if np.array_equal(label_map[known], np.flatnonzero(known)):
            return raw  # identity: nothing to map
        return cv2.LUT(raw, label_map.clip(0, 255).astype(np.uint8))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """``key`` is an index, or ``(index, seed)`` to seed this sample's augmentation
        (see ``seg.data.sampler.TrainSampler``)."""
        index, augmentation_seed = key if isinstance(key, tuple) else (key, None)
        if augmentation_seed is not None and hasattr(self.transform, "set_random_state"):
            # One generator pair for the whole pipeline. Compose.set_random_seed gives
            # every transform its own pair from the same seed: their draws coincide (the
            # flip follows the scale), and building them is a quarter of a cached sample.
            self.transform.set_random_state(np.random.default_rng(augmentation_seed),
                                            random.Random(augmentation_seed))
        try:
            image, mask = self.load(index)
        except SampleError as error:
            if self.on_error == "raise":
                raise
            return {"skipped": str(error)}
        return self.to_item(image, mask, self.samples[index].id)

    def to_item(self, image: np.ndarray, mask: np.ndarray, sample_id: str) -> dict[str, Any]:
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
        return {"image": image_t, "mask": mask_t, "id": sample_id}


def compact_ranges(values: Sequence[int]) -> str:
    """``[0, 1, 2, 3, 255]`` -> ``"0-3, 255"``."""
    parts: list[str] = []
    values = [int(v) for v in values]
    start = previous = values[0]
    for value in [*values[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if value is not None:
            start = previous = value
    return ", ".join(parts)


def require_dir(path: Path, what: str, hint: str) -> Path:
    """``path`` if it is a folder, else a one-line error naming it and the fix."""
    if path.is_file():
        raise NotAFolder(f"{what} is a file, not a folder: {printable(path)}; {hint}")
    if not path.is_dir():
        raise MissingPath(f"{what} not found: {printable(path)}; {hint}")
    return path


def read_id_list(path: Path, hint: str) -> list[str]:
    """Ids of a split list file, one per line (only the first word of a line counts).
    Read through seg.files: a regular file only (a FIFO never hangs, /dev/zero is refused),
    of at most MAX_SPLIT_LIST_BYTES; anything else is one line naming it and ``hint``.
    Each id must name something inside the dataset folder (see :func:`check_id`)."""
    if path.is_dir():  # seg.files opens a folder, then fails to wrap it (not a UserError)
        raise IsAFolder(f"split file {printable(path)} is a folder, not a file; {hint}")
    try:
        text = read_run_text(path, "split file", MAX_SPLIT_LIST_BYTES)  # drops a leading BOM
    except UserError as error:
        raise type(error)(f"{error}; {hint}") from None
    return [check_id(line.split()[0], path, number)
            for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def check_id(sample_id: str, list_file: Path, line: int) -> str:
    """``sample_id`` if it stays inside the dataset folder and prints as it is. Ids are
    joined to the root to find the files, so an absolute id or one with ``..`` would read
    files outside it (a symlink inside the root is the user's own choice and is followed)."""
    parts = Path(sample_id).parts
    if Path(sample_id).is_absolute() or ".." in parts:
        raise BadValue(f"{printable(list_file)}, line {line}: id {sample_id!r} points outside "
                       "the dataset folder; list ids relative to it (no leading / and no ..)")
    if not sample_id.isprintable():  # a BOM mid-file, a zero-width space: invisible in a path
        raise BadValue(f"{printable(list_file)}, line {line}: id {sample_id!r} holds a "
                       "character that does not print; remove it (save the file as plain "
                       "UTF-8 text)")
    return sample_id
