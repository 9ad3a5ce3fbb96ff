"""Tiny dataset trees in each official layout, in the real file formats, for the tests.

Every builder writes a few random images of ``SIZE`` with masks whose values are legal for
the layout, and returns the root to pass as ``dataset.root``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from seg.data.palette import flat_palette

SIZE = (40, 48)  # height, width
FOLDER_COLORS = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]


def random_image(seed: int, size: tuple[int, int] = SIZE) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def random_labels(seed: int, values: list[int], size: tuple[int, int] = SIZE) -> np.ndarray:
    return np.random.default_rng(seed + 1000).choice(np.array(values, np.uint8), size)


def save_palette_png(mask: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    label = Image.fromarray(mask, mode="P")
    label.putpalette(flat_palette())
    label.save(path)


def save_jpeg(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=90)


def write_list(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def make_voc(root: Path, train: int = 4, val: int = 2, num_classes: int = 21) -> Path:
    """VOC2012: JPEGImages, palette SegmentationClass PNGs (0..C-1 and 255), split lists."""
    splits = {"train": [f"2007_{i:06d}" for i in range(train)],
              "val": [f"2008_{i:06d}" for i in range(val)]}
    for split, ids in splits.items():
        for n, sample_id in enumerate(ids):
            seed = n + 100 * (split in ("val", "validation"))
            save_jpeg(random_image(seed), root / "JPEGImages" / f"{sample_id}.jpg")
            mask = random_labels(seed, [0, 1, num_classes - 1, 255])
            save_palette_png(mask, root / "SegmentationClass" / f"{sample_id}.png")
        write_list(root / "ImageSets" / "Segmentation" / f"{split}.txt", ids)
    write_list(root / "ImageSets" / "Segmentation" / "trainval.txt",
               splits["train"] + splits["val"])
    return root


def make_sbd(root: Path, voc_root: Path) -> Path:
    """SBD's benchmark_RELEASE/dataset: cls/*.mat (GTcls.Segmentation), img/*.jpg and
    train/val lists. Holds one VOC train id, one VOC val id and two ids of its own."""
    from scipy.io import savemat

    voc_lists = voc_root / "ImageSets" / "Segmentation"
    voc_train = (voc_lists / "train.txt").read_text().split()
    voc_val = (voc_lists / "val.txt").read_text().split()
    dataset = root / "dataset"
    splits = {"train": [voc_train[0], "2009_000001"], "val": [voc_val[0], "2009_000002"]}
    for split, ids in splits.items():
        for sample_id in ids:
            seed = int(sample_id[-4:]) + 7
            save_jpeg(random_image(seed), dataset / "img" / f"{sample_id}.jpg")
            (dataset / "cls").mkdir(parents=True, exist_ok=True)
            savemat(dataset / "cls" / f"{sample_id}.mat", {"GTcls": {
                "Segmentation": random_labels(seed, [0, 5, 20]),
                "Boundaries": np.zeros((1, 1)), "CategoriesPresent": np.array([5])}})
        write_list(dataset / f"{split}.txt", ids)
    return root


def make_cityscapes(root: Path, train_ids: bool = False) -> Path:
    """leftImg8bit/<split>/<city>/*_leftImg8bit.png with gtFine labelIds PNGs (and
    labelTrainIds PNGs when ``train_ids``)."""
    for split, city in (("train", "aachen"), ("val", "frankfurt")):
        for n in range(2 if split == "val" else 4):
            stem = f"{city}_{n:06d}_000019"
            seed = n + 100 * (split in ("val", "validation"))
            image_path = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            random_image(seed).save(image_path)
            label_ids = random_labels(seed, [0, 7, 8, 26, 33])
            gt = root / "gtFine" / split / city
            gt.mkdir(parents=True, exist_ok=True)
            Image.fromarray(label_ids, mode="L").save(gt / f"{stem}_gtFine_labelIds.png")
            if train_ids:
                lut = np.full(256, 255, np.uint8)
                lut[[7, 8, 26, 33]] = [0, 1, 13, 18]
                Image.fromarray(lut[label_ids], mode="L").save(
                    gt / f"{stem}_gtFine_labelTrainIds.png")
    return root


def make_ade20k(root: Path) -> Path:
    """ADEChallengeData2016: images/{training,validation}/*.jpg, annotations/.../*.png
    (grayscale; 0 = other, 1..150 = classes)."""
    for split, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
        for n in range(2 if split == "validation" else 4):
            stem = f"{prefix}_{n:08d}"
            seed = n + 100 * (split in ("val", "validation"))
            save_jpeg(random_image(seed), root / "images" / split / f"{stem}.jpg")
            path = root / "annotations" / split / f"{stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(random_labels(seed, [0, 1, 2, 150]), mode="L").save(path)
    return root


def make_folder(root: Path, rgb: bool = False, splits: bool = False, count: int = 6) -> Path:
    """images/*.png + masks/*.png (index, or RGB colours when ``rgb``) + classes.yaml,
    with split lists when ``splits``."""
    classes = [{"name": name, "color": color}
               for name, color in zip(("background", "crack", "moss"), FOLDER_COLORS,
                                      strict=True)]
    root.mkdir(parents=True, exist_ok=True)
    content = {"classes": classes, **({"ignore_color": [255, 255, 255]} if rgb else {})}
    (root / "classes.yaml").write_text(yaml.safe_dump(content))
    stems = [f"tile_{n:03d}" for n in range(count)]
    for n, stem in enumerate(stems):
        (root / "images").mkdir(exist_ok=True)
        random_image(n).save(root / "images" / f"{stem}.png")
        mask = random_labels(n, [0, 1, 2, 255])
        (root / "masks").mkdir(exist_ok=True)
        if rgb:
            table = np.array([*FOLDER_COLORS, *[[0, 0, 0]] * 252, [255, 255, 255]], np.uint8)
            Image.fromarray(table[mask], mode="RGB").save(root / "masks" / f"{stem}.png")
        else:
            save_palette_png(mask, root / "masks" / f"{stem}.png")
    if splits:
        write_list(root / "splits" / "train.txt", stems[:4])
        write_list(root / "splits" / "val.txt", stems[4:])
    return root


def make_layout(name: str, root: Path) -> dict[str, str]:
    """Build the tree for config ``dataset=name`` under ``root``; return the overrides
    that point the config at it."""
    if name in ("voc", "shapes"):
        return {"dataset.root": str(make_voc(root / "VOC2012", num_classes=8))}
    if name == "scenes":
        return {"dataset.root": str(make_voc(root / "VOC2012", num_classes=7))}
    if name == "voc_aug":
        voc = make_voc(root / "VOC2012")
        return {"dataset.root": str(voc),
                "dataset.sbd_root": str(make_sbd(root / "benchmark_RELEASE", voc))}
    if name == "cityscapes":
        return {"dataset.root": str(make_cityscapes(root / "cityscapes"))}
    if name == "ade20k":
        return {"dataset.root": str(make_ade20k(root / "ADEChallengeData2016"))}
    if name == "folder":
        return {"dataset.root": str(make_folder(root / "folder", rgb=True))}
    raise ValueError(f"no test layout for dataset={name}")


def generated_voc_masks(root: Path, num_train: int, num_val: int, size: int) -> list[np.ndarray]:
    """Check a generated dataset's VOC layout (disjoint lists of ``num_train`` and
    ``num_val`` ids, RGB JPEGs and VOC-palette PNG masks of ``size`` px); its masks."""
    lists = root / "ImageSets" / "Segmentation"
    train = (lists / "train.txt").read_text().split()
    val = (lists / "val.txt").read_text().split()
    assert len(train) == num_train and len(val) == num_val
    assert not set(train) & set(val)
    masks = []
    for sample_id in train + val:
        image = Image.open(root / "JPEGImages" / f"{sample_id}.jpg")
        mask = Image.open(root / "SegmentationClass" / f"{sample_id}.png")
        assert image.mode == "RGB" and image.size == (size, size)
        assert mask.mode == "P" and mask.size == (size, size)
        assert mask.getpalette()[:768] == flat_palette()
        masks.append(np.array(mask))
    return masks
