"""A custom dataset as two folders: ``images/`` and ``masks/``, matched by file stem.

No code to write: ``classes.yaml`` in the root names the classes (and their colours)::

    classes:
      - {name: background, color: [0, 0, 0]}
      - {name: crack, color: [255, 0, 0]}
    ignore_color: [255, 255, 255]   # optional: the colour of pixels to ignore

Masks are index PNGs (palette or grayscale: pixel value = class index, 255 = ignore) or
RGB colour masks, whose colours are mapped through the listed ones. Splits come from
``splits/<split>.txt`` (one stem per line) when ``splits/`` holds any list: then each split
read needs its own, and a missing or unreadable one is an error. Without any list, a
seeded random split of the sorted stems by ``val_fraction``. Two images of one stem
(``a.jpg`` and ``a.png``) are an error: masks are matched to images by stem.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Unpack

import numpy as np

from seg.data.base import ReadOptions, Sample, SegmentationDataset, read_id_list, require_dir
from seg.data.decoding import SampleError, describe_values, read_label_image
from seg.data.labels import IGNORE_INDEX
from seg.data.readers import READERS
from seg.errors import BadValue, MissingPath, NotAFolder
from seg.files import read_yaml
from seg.text import printable, shown

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
HINT = "set dataset.root to a folder with images/, masks/ and classes.yaml (see data/README.md)"


MAX_CLASSES_BYTES = 1 << 20  # a classes.yaml of 255 classes is a few kB
MAX_NAME_LENGTH = 100  # a table column, a TensorBoard tag: a name, not a paragraph
COLOR_FIX = "expected [r, g, b] with 0-255 each"


def load_yaml(path: Path) -> object:
    """The content of a small YAML file (seg.files.read_yaml: no aliases, a size cap, one
    line naming the file on any problem)."""
    return read_yaml(path, "classes file", MAX_CLASSES_BYTES, kind=object,
                     fix="fix it (see data/README.md)")


def read_classes(root: str | Path) -> dict:
    """``{"names": [...], "colors": [[r, g, b], ...] or None, "ignore_color": ...}`` of
    ``root/classes.yaml``. Everything later commands rely on is checked here, so that a
    file that trains also predicts, evaluates and exports: a malformed one is one line
    naming the file, the key and the fix."""
    path = require_dir(Path(root), "dataset root", HINT) / "classes.yaml"
    if path.exists() and not path.is_file():  # a folder, a FIFO that would never end...
        raise BadValue(f"{printable(path)} is not a regular file: replace it with the list of "
                       "classes")
    if not path.is_file():
        raise MissingPath(f"{printable(path)} not found: list the classes there, e.g. "
                          "`classes: [{name: background, color: [0, 0, 0]}, ...]`")
    content = load_yaml(path)
    entries = content.get("classes") if isinstance(content, dict) else None
    if not isinstance(entries, list) or not 0 < len(entries) <= IGNORE_INDEX:
        raise BadValue(f"{printable(path)}: expected `classes:` as a list of 1 to "
                       f"{IGNORE_INDEX} {{name, color}} entries, e.g. "
                       "`classes: [{name: background, color: [0, 0, 0]}, ...]`")
    names = [class_name(entry, f"classes[{index}]", path) for index, entry in enumerate(entries)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise BadValue(f"{printable(path)}: class {printable(repeated[0])!r} is listed twice; "
                       "give each class its own name")
    colors = class_colors(entries, path)
    ignore = content.get("ignore_color")
    if ignore is not None:
        ignore = rgb(ignore, "ignore_color", path)
        if colors and ignore in colors:
            raise BadValue(f"{printable(path)}: ignore_color {ignore} is also classes"
                           f"[{colors.index(ignore)}].color; give pixels to ignore a colour "
                           "no class has")
    return {"names": names, "colors": colors, "ignore_color": ignore}


def class_name(entry: object, key: str, path: Path) -> str:
    """The ``name`` of a classes.yaml entry: a non-empty, printable string of at most
    MAX_NAME_LENGTH characters."""
    if not isinstance(entry, dict) or "name" not in entry:
        raise BadValue(f"{printable(path)}: {key}: expected {{name: ..., color: [r, g, b]}}, "
                       f"got {shown(entry)}")
    name = entry["name"]
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise BadValue(f"{printable(path)}: {key}.name: expected a text of 1 to "
                       f"{MAX_NAME_LENGTH} characters, got {shown(name)}; quote it if it is a "
                       "number")
    if not name.isprintable():
        raise BadValue(f"{printable(path)}: {key}.name {shown(name)} holds characters that do "
                       "not print (controls, escapes, line breaks); remove them")
    return name


def class_colors(entries: list, path: Path) -> list[list[int]] | None:
    """The ``color`` of every entry (None when no entry has one), each an [r, g, b] no
    other class has: a colour mask maps each colour to one class."""
    if not any("color" in entry for entry in entries):
        return None
    missing = [index for index, entry in enumerate(entries) if "color" not in entry]
    if missing:
        raise BadValue(f"{printable(path)}: classes[{missing[0]}] has no color: give every "
                       "class a color, or none")
    colors = [rgb(entry["color"], f"classes[{index}].color", path)
              for index, entry in enumerate(entries)]
    for index, color in enumerate(colors):
        if colors.index(color) != index:
            raise BadValue(f"{printable(path)}: classes[{index}].color {color} is also classes"
                           f"[{colors.index(color)}].color; give each class its own colour")
    return colors


def rgb(value: object, key: str, path: Path) -> list[int]:
    """``value`` if it is [r, g, b], three integers from 0 to 255."""
    if not (isinstance(value, list) and len(value) == 3
            and all(type(c) is int and 0 <= c <= 255 for c in value)):
        raise BadValue(f"{printable(path)}: {key}: {COLOR_FIX}, got {shown(value)}")
    return value


def split_stems(stems: Sequence[str], split: str, val_fraction: float, seed: int) -> list[str]:
    """A fixed random split: the same stems, fraction and seed always give the same split."""
    if split not in ("train", "val"):
        raise MissingPath(f"split {split!r} needs a splits/{split}.txt list file")
    shuffled = sorted(stems)
    random.Random(seed).shuffle(shuffled)
    num_val = round(len(shuffled) * val_fraction)
    chosen = shuffled[:num_val] if split == "val" else shuffled[num_val:]
    return sorted(chosen)


def split_lists(root: Path) -> list[Path]:
    """The split lists of ``root/splits`` (every ``*.txt`` there, whatever it is: a link, a
    FIFO, a folder), or none. A ``splits`` that is not a folder is one line."""
    folder = root / "splits"
    if not folder.is_dir():
        if os.path.lexists(folder):
            raise NotAFolder(f"{printable(folder)} is not a folder: make it a folder of split "
                             "lists (train.txt, val.txt), or remove it to split at random")
        return []
    return sorted(folder.glob("*.txt"))


def files_by_stem(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """The files of ``folder`` with one of ``suffixes``, by stem. Two of one stem (``a.jpg``
    and ``a.png``) are one line: a mask is matched to its image by stem, so one of them
    would be left out without a word."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            raise BadValue(f"{printable(found[path.stem])} and {printable(path.name)} share the "
                           f"stem {shown(path.stem)}, and masks are matched to images by stem: "
                           "rename one of them (and its mask), or remove it")
        found[path.stem] = path
    return found


@READERS.register("folder")
class FolderSegmentation(SegmentationDataset):
    """``root/images/<stem>.<jpg|png|...>`` with ``root/masks/<stem>.png``; see the module
    docstring for ``classes.yaml`` and the splits."""

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None,
                 num_classes: int | None = None, val_fraction: float = 0.2, seed: int = 0,
                 **options: Unpack[ReadOptions]) -> None:
        self.root = Path(root)
        self.split = split
        classes = read_classes(self.root)  # checks that the root is a folder
        self.class_names = classes["names"]
        if num_classes is not None and num_classes != len(self.class_names):
            raise BadValue(f"dataset.num_classes={num_classes} but "
                           f"{printable(self.root / 'classes.yaml')} lists "
                           f"{len(self.class_names)} classes")
        self.color_table = self.build_color_table(classes["colors"], classes["ignore_color"])
        images = files_by_stem(require_dir(self.root / "images", "image folder", HINT),
                               IMAGE_SUFFIXES)
        masks = require_dir(self.root / "masks", "mask folder", HINT)
        stems, source = self.split_of(list(images), val_fraction, seed)
        samples = [Sample(stem, images.get(stem, self.root / "images" / f"{stem}.jpg"),
                          masks / f"{stem}.png") for stem in stems]
        super().__init__(samples, len(self.class_names), transform, source=source, **options)

    def split_of(self, stems: list[str], val_fraction: float, seed: int
                 ) -> tuple[list[str], str]:
        """The stems of this split and where they come from: its list when ``splits/``
        holds any list (then every split needs its own: a missing or unreadable one is one
        line, never a random split that would share images with the listed ones), else the
        seeded random split of ``stems``."""
        lists = split_lists(self.root)
        if not lists:
            return (split_stems(stems, self.split, val_fraction, seed),
                    f"the {self.split} split ({val_fraction:.0%} val, seed {seed}) of "
                    f"{printable(self.root)}")
        list_file = self.root / "splits" / f"{self.split}.txt"
        others = ", ".join(printable(path.name) for path in lists if path != list_file)
        hint = (f"with split lists in splits/ ({others or list_file.name}), each split needs "
                f"its own: list the {self.split} stems in {list_file.name}, one per line, or "
                "remove splits/ to split at random")
        return read_id_list(list_file, hint), str(list_file)

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
            raise SampleError(f"{printable(path)}: RGB colour mask, but "
                              f"{printable(self.root / 'classes.yaml')} gives no colors: add "
                              "`color: [r, g, b]` to each class")
        packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) \
            | rgb[..., 2]
        colors, inverse = np.unique(packed, return_inverse=True)
        unknown = [int(c) for c in colors if int(c) not in self.color_table]
        if unknown:
            shown = describe_values([f"({c >> 16}, {(c >> 8) & 255}, {c & 255})"
                                     for c in unknown])
            raise SampleError(f"{printable(path)}: colours {shown} are not in classes.yaml; add "
                              "them (or ignore_color) there, or set dataset.on_error=skip")
        classes = np.array([self.color_table[int(c)] for c in colors], dtype=np.uint8)
        return classes[inverse.reshape(packed.shape)]

