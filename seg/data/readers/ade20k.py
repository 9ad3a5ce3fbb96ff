"""ADE20K as the MIT Scene Parsing Benchmark (SceneParsing, ADEChallengeData2016)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Unpack

from seg.data.base import ReadOptions, Sample, SegmentationDataset, class_lut, require_dir
from seg.data.labels import IGNORE_INDEX
from seg.data.readers import READERS

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea",
    "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe",
    "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator",
    "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door",
    "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman",
    "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt",
    "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan",
    "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)
SPLITS = {"train": "training", "val": "validation"}
HINT = "set dataset.root to the ADEChallengeData2016 folder (see data/README.md)"


@READERS.register("ade20k")
class ADE20K(SegmentationDataset):
    """``root/images/<training|validation>/*.jpg`` with ``root/annotations/.../*.png``.

    Annotation 0 ("other", not one of the 150 classes) is ignored and classes 1..150
    become 0..149, as mmsegmentation's ``reduce_zero_label``. ``split`` is ``training``
    or ``validation`` (``train`` and ``val`` are accepted too).
    """

    label_description = "ADE20K labels (0 = other, 1-150 = classes)"

    classes = ADE20K_CLASSES

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None,
                 num_classes: int = len(ADE20K_CLASSES), **options: Unpack[ReadOptions]) -> None:
        self.root = require_dir(Path(root), "dataset root", HINT)
        self.split = SPLITS.get(split, split)
        images = require_dir(self.root / "images" / self.split, "ADE20K image folder", HINT)
        masks = require_dir(self.root / "annotations" / self.split, "ADE20K label folder", HINT)
        samples = [Sample(path.stem, path, masks / f"{path.stem}.png")
                   for path in sorted(images.glob("*.jpg"))]
        reduce_zero_label = {0: IGNORE_INDEX, **{v: v - 1 for v in range(1, num_classes + 1)}}
        super().__init__(samples, num_classes, transform,
                         label_map=class_lut(num_classes, reduce_zero_label), source=str(images),
                         **options)
