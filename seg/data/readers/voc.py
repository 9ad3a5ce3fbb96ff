"""PASCAL VOC 2012 (also the layout of the generated "shapes" data) and VOC + SBD."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Unpack

import numpy as np

from seg.data.base import ReadOptions, Sample, SegmentationDataset, read_id_list, require_dir
from seg.data.decoding import SampleError, open_regular
from seg.data.readers import READERS
from seg.errors import MissingPath
from seg.text import printable

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
VOC_HINT = "set dataset.root to the VOC2012 folder (see data/README.md)"


def voc_split_file(root: Path, split: str) -> Path:
    """The list of ``split``'s ids, one per line."""
    return root / "ImageSets" / "Segmentation" / f"{split}.txt"


def voc_split_ids(root: Path, split: str) -> list[str]:
    """Ids of ``root/ImageSets/Segmentation/<split>.txt``."""
    require_dir(root, "dataset root", VOC_HINT)
    return read_id_list(voc_split_file(root, split), VOC_HINT)


@READERS.register("voc")
class VOCSegmentation(SegmentationDataset):
    """Segmentation dataset in PASCAL VOC layout.

    Expects ``root/ImageSets/Segmentation/<split>.txt`` (one id per line),
    ``root/JPEGImages/<id>.jpg`` and ``root/SegmentationClass/<id>.png`` (palette PNG whose
    pixel values are class indices, 255 = ignore). See :class:`SegmentationDataset` for the
    items and the other arguments.
    """

    classes = VOC_CLASSES

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None,
                 num_classes: int = len(VOC_CLASSES), **options: Unpack[ReadOptions]) -> None:
        self.root = Path(root)
        self.split = split
        ids = voc_split_ids(self.root, split)
        samples = [Sample(i, self.image_path(i), self.mask_path(i)) for i in ids]
        super().__init__(samples, num_classes, transform,
                         source=str(voc_split_file(self.root, split)), **options)

    def image_path(self, sample_id: str) -> Path:
        """Path of the JPEG image for ``sample_id``."""
        return self.root / "JPEGImages" / f"{sample_id}.jpg"

    def mask_path(self, sample_id: str) -> Path:
        """Path of the label PNG for ``sample_id``."""
        return self.root / "SegmentationClass" / f"{sample_id}.png"


def read_sbd_mat(path: Path) -> np.ndarray:
    """The class mask of an SBD ``cls/<id>.mat`` file (field ``GTcls.Segmentation``)."""
    from scipy.io import loadmat  # only SBD needs scipy; keep it off the import path

    with open_regular(path, "mask") as file:  # a FIFO or /dev/zero named .mat is refused
        try:
            gt = loadmat(file, squeeze_me=True, struct_as_record=False)["GTcls"]
            mask = np.asarray(gt.Segmentation)
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:
            raise SampleError(f"{printable(path)}: not an SBD GTcls file "
                              f"({printable(error)})") from None
    if mask.ndim != 2 or mask.min(initial=0) < 0 or mask.max(initial=0) > 255:
        raise SampleError(f"{printable(path)}: GTcls.Segmentation is not a 2-D mask of values "
                          "0-255")
    return mask.astype(np.uint8)


TRAIN_AUG_LIST = "ImageSets/Segmentation/train_aug.txt"
SBD_HINT = "set dataset.sbd_root to SBD's benchmark_RELEASE folder (see data/README.md)"


def train_aug_ids(voc_root: Path, sbd_root: Path | None) -> list[str]:
    """The "train_aug" ids: SBD train + SBD val + VOC train, minus VOC val, sorted."""
    if sbd_root is None:
        raise MissingPath(f"{printable(voc_root / TRAIN_AUG_LIST)} not found and dataset.sbd_root "
                          f"is not set: {SBD_HINT}, or run scripts/prepare_data.py sbd")
    sbd_root = require_dir(Path(sbd_root), "SBD folder", SBD_HINT)
    sbd = require_dir(sbd_root / "dataset", "SBD dataset folder", SBD_HINT)
    ids = set(read_id_list(sbd / "train.txt", SBD_HINT)) | set(read_id_list(sbd / "val.txt",
                                                                            SBD_HINT))
    ids |= set(voc_split_ids(voc_root, "train"))
    return sorted(ids - set(voc_split_ids(voc_root, "val")))


@READERS.register("voc_aug")
class VOCAugSegmentation(SegmentationDataset):
    """VOC 2012 plus the Semantic Boundaries Dataset (SBD, Hariharan et al. 2011): the
    10,582-image "train_aug" set of FCN, DeepLab and mmsegmentation.

    ``split="train_aug"`` is SBD train + SBD val + VOC train, minus VOC val; any other split
    is read from VOC's lists. A sample's label is VOC's ``SegmentationClass/<id>.png`` when
    VOC has one (finer, with the 255 outline), else ``SegmentationClassAug/<id>.png`` (what
    ``scripts/prepare_data.py sbd`` writes), else SBD's ``dataset/cls/<id>.mat``. Images
    come from VOC's ``JPEGImages``, else SBD's ``dataset/img``.
    """

    classes = VOC_CLASSES

    def __init__(self, root: str | Path, sbd_root: str | Path | None,
                 split: str = "train_aug", transform: Callable | None = None,
                 num_classes: int = len(VOC_CLASSES), **options: Unpack[ReadOptions]) -> None:
        self.root = Path(root)
        self.sbd_root = None if sbd_root is None else Path(sbd_root)
        self.split = split
        if split != "train_aug":
            ids, source = voc_split_ids(self.root, split), str(voc_split_file(self.root, split))
        elif os.path.lexists(self.root / TRAIN_AUG_LIST):  # by scripts/prepare_data.py sbd
            # read whatever it is: a FIFO or a folder there is one line, not a quiet merge
            ids = read_id_list(self.root / TRAIN_AUG_LIST, VOC_HINT)
            source = str(self.root / TRAIN_AUG_LIST)
        else:
            ids = train_aug_ids(self.root, self.sbd_root)
            source = f"the {split} split of {self.root} and {self.sbd_root}"
        samples = [Sample(i, self.image_path(i), self.mask_path(i)) for i in ids]
        super().__init__(samples, num_classes, transform, source=source, **options)

    def image_path(self, sample_id: str) -> Path:
        voc = self.root / "JPEGImages" / f"{sample_id}.jpg"
        if voc.is_file() or self.sbd_root is None:
            return voc
        return self.sbd_root / "dataset" / "img" / f"{sample_id}.jpg"

    def mask_path(self, sample_id: str) -> Path:
        for path in (self.root / "SegmentationClass" / f"{sample_id}.png",
                     self.root / "SegmentationClassAug" / f"{sample_id}.png"):
            if path.is_file():
                return path
        if self.sbd_root is None:
            return self.root / "SegmentationClassAug" / f"{sample_id}.png"  # reported missing
        return self.sbd_root / "dataset" / "cls" / f"{sample_id}.mat"

    def read_mask(self, path: Path) -> np.ndarray:
        return read_sbd_mat(path) if path.suffix == ".mat" else super().read_mask(path)
