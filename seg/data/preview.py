"""``seg-data show``: training samples as the model sees them, written as PNG files.

Each file is one augmented sample of the training split, read through the training
augmentation (seg.data.transforms.augmentation) in the order and with the per-sample
seeds of a run's first epoch (seg.data.sampler.TrainSampler), so that a recipe's
rotation, flips, crops and padding can be looked at before a run trains on them. Left:
the crop as the model gets it; right: the same crop with its mask blended in the
dataset's palette as seg-predict's overlays are (seg.drawing.overlay: object classes at
half opacity and outlined, background and ignored pixels left as they are).

Nothing is ever written over: the files go into a new folder, or an empty one.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from seg.data.base import SegmentationDataset
from seg.data.sampler import TrainSampler
from seg.drawing import overlay
from seg.errors import BadValue, NotAFolder, PathExists
from seg.files import write_file
from seg.settings import integer_in, positive_int

PREVIEW_ROOT = Path("data_preview")  # the default folders' parent, in the current folder
OVERLAY_ALPHA = 0.5
LARGEST_SEED = 2**32 - 1  # as a run's seed (seg.training)
LONGEST_ID = 100  # characters of a sample's id kept in its file's name

log = logging.getLogger(__name__)


def fresh_folder(name: str, root: Path = PREVIEW_ROOT) -> Path:
    """A new folder ``root/<name>-<n>``, the first ``n`` from 1 whose name is free,
    created here (so that two commands at once never share one)."""
    stem = safe_name(name) or "dataset"
    root.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        folder = root / f"{stem}-{number}"
        try:
            folder.mkdir()
        except FileExistsError:
            number += 1
            continue
        return folder


def chosen_folder(out: Path) -> Path:
    """``out`` (``--out``), created if missing; refused if it is not a folder or holds
    anything, whose files stay as they are."""
    if os.path.lexists(out) and not out.is_dir():
        raise NotAFolder(f"--out {out} is a file, not a folder: choose a new folder, or "
                         "leave --out out for a fresh one under data_preview/")
    if out.is_dir() and any(out.iterdir()):
        raise PathExists(f"--out {out} is not empty: seg-data show writes only into a new or "
                         "empty folder; choose another, or leave --out out for a fresh one "
                         "under data_preview/")
    out.mkdir(parents=True, exist_ok=True)
    return out


def safe_name(text: str) -> str:
    """``text`` with anything but letters, digits, ``-``, ``_`` and ``.`` replaced by ``_``,
    cut to LONGEST_ID characters: a sample's id or a dataset's name in a file name."""
    return re.sub(r"[^\w.-]", "_", text, flags=re.ASCII)[:LONGEST_ID].lstrip(".")


def seeded_keys(size: int, seed: int) -> Iterator[tuple[int, int]]:
    """``(index, augmentation seed)`` pairs as one process of a run seeded ``seed`` reads
    them: epoch 0's order, then epoch 1's, and so on."""
    epoch = 0
    while True:
        sampler = TrainSampler(size, seed)
        sampler.set_epoch(epoch)
        yield from sampler
        epoch += 1


def side_by_side(image: np.ndarray, mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3, uint8) and, to its right, the same with ``mask`` (H, W) blended
    in: (H, 2 W, 3)."""
    return np.concatenate([image, overlay(image, mask, palette, OVERLAY_ALPHA)], axis=1)


def png_bytes(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def show_samples(dataset: SegmentationDataset, palette: Sequence[Sequence[int]], name: str,
                 count: int, seed: int, out: Path | None = None) -> tuple[Path, list[Path]]:
    """Write ``count`` augmented samples of ``dataset`` (its transform the training
    augmentation), as a run seeded ``seed`` first reads them, into ``out`` or a fresh
    ``data_preview/<name>-<n>``; return the folder and the files. A folder made here and
    left empty by an error (a bad sample) is removed again."""
    count = positive_int(count, "--count")
    seed = integer_in(seed, "--seed", 0, LARGEST_SEED)
    if len(dataset) == 0:
        raise BadValue(f"the training split of {name} has no samples: nothing to show")
    made = out is None or not os.path.lexists(out)
    folder = fresh_folder(name) if out is None else chosen_folder(out)
    try:
        return folder, write_previews(dataset, palette, folder, count, seed)
    except BaseException:
        if made:
            with contextlib.suppress(OSError):  # not empty: it keeps what was written
                folder.rmdir()
        raise


def write_previews(dataset: SegmentationDataset, palette: Sequence[Sequence[int]],
                   folder: Path, count: int, seed: int) -> list[Path]:
    """Write ``count`` samples of ``dataset`` into ``folder`` as ``<n>_<id>.png`` (see
    :func:`show_samples`); return their paths. A sample that ``dataset.on_error=skip``
    leaves out is skipped here too, with a warning; after a whole epoch's worth of them,
    fewer files are written."""
    colours = np.asarray(palette, dtype=np.uint8)
    written: list[Path] = []
    for index, augmentation_seed in itertools.islice(seeded_keys(len(dataset), seed),
                                                     count + len(dataset)):
        item = dataset[index, augmentation_seed]
        if "skipped" in item:
            log.warning("skipped: %s", item["skipped"])
            continue
        image = item["image"].permute(1, 2, 0).clamp(0, 255).round().byte().numpy()  # (H, W, 3)
        mask = item["mask"].byte().numpy()  # (H, W): classes and 255, which fit a byte
        name = f"{len(written) + 1:03d}_{safe_name(item['id'])}.png"
        picture = side_by_side(image, mask, colours)
        written.append(write_file(folder / name, png_bytes(picture), replace=False,
                                  sync=False))
        if len(written) == count:
            break
    return written
