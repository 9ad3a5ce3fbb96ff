"""Cityscapes (Cordts et al. 2016): fine annotations, evaluated on the 19 train classes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Unpack

import numpy as np

from seg.data.base import ReadOptions, Sample, SegmentationDataset, class_lut, require_dir
from seg.data.labels import IGNORE_INDEX
from seg.data.readers import READERS

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
# labelId -> trainId as in cityscapesScripts' helpers/labels.py (a test checks it against
# that package): the 19 evaluated classes, every other id ignored.
LABEL_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
NUM_LABEL_IDS = 34  # ids 0..33; the license plate's -1 is written as 255 in uint8 PNGs
HINT = ("set dataset.root to the folder holding leftImg8bit/ and gtFine/ "
        "(see data/README.md)")


def label_id_lut() -> np.ndarray:
    """labelIds PNG value -> trainId (255 = ignored); -1 for values Cityscapes never uses."""
    mapping = {label_id: IGNORE_INDEX for label_id in range(NUM_LABEL_IDS)}
    mapping.update(LABEL_TO_TRAIN_ID)
    mapping[255] = IGNORE_INDEX
    return class_lut(len(CITYSCAPES_CLASSES), mapping)


@READERS.register("cityscapes")
class Cityscapes(SegmentationDataset):
    """``root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with
    ``root/gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png`` when present (what
    cityscapesScripts' createTrainIdLabelImgs and ``scripts/prepare_data.py cityscapes``
    write), else ``..._gtFine_labelIds.png`` mapped to trainIds on load.
    """

    classes = CITYSCAPES_CLASSES

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None,
                 num_classes: int = len(CITYSCAPES_CLASSES),
                 **options: Unpack[ReadOptions]) -> None:
        self.root = require_dir(Path(root), "dataset root", HINT)
        self.split = split
        images = require_dir(self.root / "leftImg8bit" / split, "Cityscapes image folder", HINT)
        labels = require_dir(self.root / "gtFine" / split, "Cityscapes label folder", HINT)
        samples = []
        for image in sorted(images.glob("*/*_leftImg8bit.png")):
            stem = image.name.removesuffix("_leftImg8bit.png")
            mask = labels / image.parent.name / f"{stem}_gtFine_labelTrainIds.png"
            if not mask.is_file():
                mask = mask.with_name(f"{stem}_gtFine_labelIds.png")
            samples.append(Sample(f"{image.parent.name}/{stem}", image, mask))
        self.train_id_map = class_lut(num_classes)
        self.label_id_map = label_id_lut()
        super().__init__(samples, num_classes, transform, source=str(images), **options)

    def labels_of(self, path: Path) -> tuple[np.ndarray, str]:
        if path.name.endswith("_labelTrainIds.png"):
            return self.train_id_map, "Cityscapes trainIds"
        return self.label_id_map, "Cityscapes labelIds"
