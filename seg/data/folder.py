"""A custom dataset as two folders: ``images/`` and ``masks/``, matched by file stem.

No code to write: ``classes.yaml`` in the root names the classes (and their colours)::

    classes:
      - {name: background, color: [0, 0, 0]}
      - {name: crack, color: [255, 0, 0]}
    ignore_color: [255, 255, 255]   # optional: the colour of pixels to ignore

Masks are index PNGs (palette or grayscale: pixel value = class index, 255 = ignore) or
RGB colour masks, whose colours are mapped through the listed ones. Splits come from
``splits/<split>.txt`` (one stem per line) when present, else from a seeded random split
of the sorted stems by ``val_fraction``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import yaml

from seg.data.base import (
    IGNORE_INDEX,
    MAX_IMAGE_PIXELS,
    Sample,
    SampleError,
    SegmentationDataset,
    describe_values,
    read_id_list,
    read_label_image,
    require_dir,
)
from seg.errors import BadValue, MissingPath

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
HINT = "set dataset.root to a folder with images/, masks/ and classes.yaml (see data/README.md)"


def read_classes(root: str | Path) -> dict:
    """``{"names": [...], "colors": [[r, g, b], ...] or None, "ignore_color": ...}`` of
    ``root/classes.yaml``; a malformed file is an error naming the file and the fix."""
    path = require_dir(Path(root), "dataset root", HINT) / "classes.yaml"
    if not path.is_file():
        raise MissingPath(f"{path} not found: list the classes there, e.g. "
                          "`classes: [{name: background, color: [0, 0, 0]}, ...]`")
    try:
        content = yaml.safe_load(path.read_text()) or {}
        names = [str(entry["name"]) for entry in content["classes"]]
        colors = [[int(c) for c in entry["color"]] for entry in content["classes"]
                  if "color" in entry]
        ignore = content.get("ignore_color")
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        raise BadValue(f"{path}: expected `classes:` as a list of {{name, color}} "
                       f"entries ({error!r})") from None
    if colors and len(colors) != len(names):
        raise BadValue(f"{path}: give every class a color, or none")
    if not names or len(names) > IGNORE_INDEX:
        raise BadValue(f"{path}: list between 1 and 255 classes")
    return {"names": names, "colors": colors or None,
            "ignore_color": None if ignore is None else [int(c) for c in ignore]}


def split_stems(stems: Sequence[str], split: str, val_fraction: float, seed: int) -> list[str]:
    """A fixed random split: the same stems, fraction and seed always give the same split."""
    if split not in ("train", "val"):
        raise MissingPath(f"split {split!r} needs a splits/{split}.txt list file")
    shuffled = sorted(stems)
    random.Random(seed).shuffle(shuffled)
    num_val = round(len(shuffled) * val_fraction)
    chosen = shuffled[:num_val] if split == "val" else shuffled[num_val:]
    return sorted(chosen)


def files_by_stem(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes}


class FolderSegmentation(SegmentationDataset):
    """``root/images/<stem>.<jpg|png|...>`` with ``root/masks/<stem>.png``; see the module
    docstring for ``classes.yaml`` and the splits."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Callable | None = None,
        cache: bool = False,
        num_classes: int | None = None,
        on_error: str = "raise",
        val_fraction: float = 0.2,
        seed: int = 0,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        self.root = Path(root)
        self.split = split
        classes = read_classes(self.root)  # checks that the root is a folder
        self.class_names = classes["names"]
        if num_classes is not None and num_classes != len(self.class_names):
            raise BadValue(f"dataset.num_classes={num_classes} but {self.root}/classes.yaml "
                           f"lists {len(self.class_names)} classes")
        self.color_table = self.build_color_table(classes["colors"], classes["ignore_color"])
        images = files_by_stem(require_dir(self.root / "images", "image folder", HINT),
                               IMAGE_SUFFIXES)
        masks = require_dir(self.root / "masks", "mask folder", HINT)
        list_file = self.root / "splits" / f"{split}.txt"
        if list_file.is_file():
            stems = read_id_list(list_file, HINT)
            source = str(list_file)
        else:
            stems = split_stems(list(images), split, val_fraction, seed)
            source = f"the {split} split ({val_fraction:.0%} val, seed {seed}) of {self.root}"
        samples = [Sample(stem, images.get(stem, self.root / "images" / f"{stem}.jpg"),
                          masks / f"{stem}.png") for stem in stems]
        super().__init__(samples, len(self.class_names), transform, cache, on_error,
                         source=source, max_image_pixels=max_image_pixels)

    @staticmethod
    def build_color_table(colors: list[list[int]] | None, ignore_color: list[int] | None
                          ) -> dict[int, int]:
        """Packed RGB (r << 16 | g << 8 | b) -> class index, for colour masks."""
        table = {} if colors is None else {
            (r << 16) | (g << 8) | b: index for index, (r, g, b) in enumerate(colors)}
        if ignore_color is not None:
            r, g, b = ignore_color
            table[(r << 16) | (g << 8) | b] = IGNORE_INDEX
        return table

    def read_mask(self, path: Path) -> np.ndarray:
        mask = read_label_image(path, self.max_image_pixels)
        return mask if mask.ndim == 2 else self.colors_to_classes(mask, path)

    def colors_to_classes(self, rgb: np.ndarray, path: Path) -> np.ndarray:
        if not self.color_table:
            raise SampleError(f"{path}: RGB colour mask, but {self.root}/classes.yaml gives "
                              "no colors: add `color: [r, g, b]` to each class")
        packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) \
            | rgb[..., 2]
        colors, inverse = np.unique(packed, return_inverse=True)
        unknown = [int(c) for c in colors if int(c) not in self.color_table]
        if unknown:
            shown = describe_values([f"({c >> 16}, {(c >> 8) & 255}, {c & 255})"
                                     for c in unknown])
            raise SampleError(f"{path}: colours {shown} are not in classes.yaml; add them "
                              "(or ignore_color) there, or set dataset.on_error=skip")
        classes = np.array([self.color_table[int(c)] for c in colors], dtype=np.uint8)
        return classes[inverse.reshape(packed.shape)]

