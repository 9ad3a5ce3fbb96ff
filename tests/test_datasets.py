"""The dataset readers on tiny trees of each official layout: items, label conventions,
every kind of bad file and what happens to it, ``seg-data check``, and training."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import loadmat

from seg.cli.data import main as seg_data
from seg.cli.errors import one_line
from seg.data.decoding import SampleError
from seg.data.loader import build_loader
from seg.data.readers.ade20k import ADE20K
from seg.data.readers.cityscapes import LABEL_TO_TRAIN_ID, Cityscapes
from seg.data.readers.folder import FolderSegmentation
from seg.data.readers.voc import VOCAugSegmentation, VOCSegmentation
from seg.engine import endless
from seg.training import train
from tests.layouts import (
    SIZE,
    make_ade20k,
    make_cityscapes,
    make_folder,
    make_layout,
    make_sbd,
    make_voc,
    save_palette_png,
)


def png_values(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


# -- readers ----------------------------------------------------------------------------


def test_voc_items(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "VOC2012")
    dataset = VOCSegmentation(root, "val")
    assert dataset.ids == ["2008_000000", "2008_000001"]
    item = dataset[1]
    assert item["id"] == "2008_000001" and item["image"].shape == (3, *SIZE)
    expected = png_values(root / "SegmentationClass" / "2008_000001.png")
    assert torch.equal(item["mask"], torch.from_numpy(expected).long())
    assert len(VOCSegmentation(root, "trainval")) == 6


def test_voc_aug_merges_sbd(tmp_path: Path) -> None:
    voc = make_voc(tmp_path / "VOC2012")
    sbd = make_sbd(tmp_path / "benchmark_RELEASE", voc)
    dataset = VOCAugSegmentation(voc, sbd, "train_aug")
    # SBD train + SBD val + VOC train, minus VOC val (2008_000000 is in SBD val)
    assert dataset.ids == [f"2007_{i:06d}" for i in range(4)] + ["2009_000001", "2009_000002"]
    sbd_only = dataset.ids.index("2009_000002")
    assert dataset.samples[sbd_only].mask.suffix == ".mat"
    assert dataset.samples[sbd_only].image.parent == sbd / "dataset" / "img"
    expected = loadmat(sbd / "dataset" / "cls" / "2009_000002.mat",
                       squeeze_me=True, struct_as_record=False)["GTcls"].Segmentation
    assert np.array_equal(dataset.load(sbd_only)[1], expected)
    # an id VOC annotates keeps VOC's finer mask
    assert dataset.samples[0].mask == voc / "SegmentationClass" / "2007_000000.png"
    assert VOCAugSegmentation(voc, sbd, "val").ids == ["2008_000000", "2008_000001"]


def test_voc_aug_without_sbd_says_what_to_set(tmp_path: Path) -> None:
    voc = make_voc(tmp_path / "VOC2012")
    with pytest.raises(FileNotFoundError, match="dataset.sbd_root"):
        VOCAugSegmentation(voc, None, "train_aug")


def test_cityscapes_label_ids_map_to_train_ids(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path / "cityscapes")
    dataset = Cityscapes(root, "train")
    assert len(dataset) == 4 and dataset.ids[0] == "aachen/aachen_000000_000019"
    raw = png_values(dataset.samples[0].mask)
    mask = dataset.load(0)[1]
    for label_id, train_id in ((0, 255), (7, 0), (8, 1), (26, 13), (33, 18)):
        assert (mask[raw == label_id] == train_id).all()


def test_cityscapes_prefers_train_id_pngs(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path / "cityscapes", train_ids=True)
    dataset = Cityscapes(root, "val")
    assert dataset.samples[0].mask.name.endswith("_gtFine_labelTrainIds.png")
    label_ids = png_values(dataset.samples[0].mask.with_name(
        dataset.samples[0].mask.name.replace("labelTrainIds", "labelIds")))
    mapped = Cityscapes(make_cityscapes(tmp_path / "ids_only"), "val").load(0)[1]
    assert np.array_equal(dataset.load(0)[1], mapped) and label_ids.max() == 33


def test_cityscapes_mapping_equals_cityscapes_scripts() -> None:
    from cityscapesscripts.helpers.labels import labels

    official = {label.id: label.trainId for label in labels
                if label.id >= 0 and label.trainId not in (255, -1)}
    assert official == LABEL_TO_TRAIN_ID
    names = [label.name for label in sorted(labels, key=lambda lab: lab.trainId)
             if 0 <= label.trainId < 255]
    from seg.data.readers.cityscapes import CITYSCAPES_CLASSES
    assert tuple(names) == CITYSCAPES_CLASSES


def test_ade20k_reduces_zero_label(tmp_path: Path) -> None:
    root = make_ade20k(tmp_path / "ADEChallengeData2016")
    dataset = ADE20K(root, "val")  # alias of "validation"
    assert dataset.ids == ["ADE_val_00000000", "ADE_val_00000001"]
    raw = png_values(dataset.samples[0].mask)
    mask = dataset.load(0)[1]
    for value, expected in ((0, 255), (1, 0), (2, 1), (150, 149)):
        assert (raw == value).any() and (mask[raw == value] == expected).all()
    assert len(ADE20K(root, "training")) == 4


def test_folder_with_index_masks_and_split_lists(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "folder", splits=True)
    train = FolderSegmentation(root, "train")
    assert train.ids == ["tile_000", "tile_001", "tile_002", "tile_003"]
    assert train.class_names == ["background", "crack", "moss"]
    assert np.array_equal(train.load(0)[1], png_values(root / "masks" / "tile_000.png"))
    assert FolderSegmentation(root, "val").ids == ["tile_004", "tile_005"]


def test_folder_rgb_masks_and_seeded_split(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "folder", rgb=True, count=10)
    train = FolderSegmentation(root, "train", val_fraction=0.3, seed=1)
    val = FolderSegmentation(root, "val", val_fraction=0.3, seed=1)
    assert len(val) == 3 and sorted(train.ids + val.ids) == [f"tile_{n:03d}" for n in range(10)]
    assert FolderSegmentation(root, "val", val_fraction=0.3, seed=1).ids == val.ids
    assert FolderSegmentation(root, "val", val_fraction=0.3, seed=2).ids != val.ids
    rgb = np.array(Image.open(root / "masks" / f"{train.ids[0]}.png"))
    mask = train.load(0)[1]
    for color, index in (((0, 0, 0), 0), ((255, 0, 0), 1), ((0, 255, 0), 2),
                         ((255, 255, 255), 255)):
        where = (rgb == color).all(-1)
        assert where.any() and (mask[where] == index).all()


def test_two_images_of_one_stem_are_one_line_naming_both(tmp_path: Path) -> None:
    """One of them was left out without a word: masks are matched to images by stem."""
    root = make_folder(tmp_path / "folder")
    Image.open(root / "images" / "tile_001.png").save(root / "images" / "tile_001.jpg")
    with pytest.raises(ValueError) as raised:
        FolderSegmentation(root, "train")
    assert str(raised.value) == (f"{root / 'images' / 'tile_001.jpg'} and tile_001.png share "
                                 "the stem 'tile_001', and masks are matched to images by "
                                 "stem: rename one of them (and its mask), or remove it")


def test_folder_without_classes_yaml(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "folder")
    (root / "classes.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="classes.yaml not found: list the classes"):
        FolderSegmentation(root, "train")


# -- bad files ----------------------------------------------------------------------------


NOT_AN_IMAGE = "cannot decode image (corrupt or not an image); replace the file"


def corrupt_jpeg(root: Path, sample_id: str) -> Path:
    path = root / "JPEGImages" / f"{sample_id}.jpg"
    path.write_bytes(b"\xff\xd8 this is no jpeg \xff\xd9")
    return path


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return path


def resize_mask(path: Path) -> Path:
    save_palette_png(np.zeros((10, 12), np.uint8), path)
    return path


def out_of_range(path: Path, value: int = 42) -> Path:
    mask = png_values(path)
    mask[0, :3] = value
    save_palette_png(mask, path)
    return path


FAULTS = {
    "corrupt JPEG": (lambda r: corrupt_jpeg(r, "2007_000000"), "cannot decode image"),
    "truncated JPEG": (lambda r: truncate(r / "JPEGImages" / "2007_000001.jpg"),
                       "truncated JPEG"),
    "truncated PNG": (lambda r: truncate(r / "SegmentationClass" / "2007_000002.png"),
                      "cannot decode mask"),
    "mask of another size": (lambda r: resize_mask(r / "SegmentationClass" / "2007_000003.png"),
                             "mask is 12x10 but its image 2007_000003.jpg is 48x40"),
    "out-of-range label": (lambda r: out_of_range(r / "SegmentationClass" / "2007_000004.png"),
                           r"label values 42 are not class indices \(allowed: 0-20, 255\)"),
}


def faulty_voc(root: Path) -> tuple[Path, list[tuple[Path, str]]]:
    """A VOC tree whose first five train samples each have one of FAULTS."""
    root = make_voc(root, train=6)
    planted = [(plant(root), message) for plant, message in FAULTS.values()]
    return root, planted


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_names_the_file_and_the_problem(tmp_path: Path, fault: str) -> None:
    root = make_voc(tmp_path / "VOC2012", train=6)
    plant, message = FAULTS[fault]
    path = plant(root)
    dataset = VOCSegmentation(root, "train")
    with pytest.raises(SampleError, match=message) as raised:
        dataset[dataset.ids.index(path.stem)]
    assert str(path) in str(raised.value)


def test_unknown_rgb_colour(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "folder", rgb=True)
    path = root / "masks" / "tile_001.png"
    rgb = np.array(Image.open(path))
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(path)
    dataset = FolderSegmentation(root, "train", val_fraction=0.0)
    with pytest.raises(SampleError, match=r"colours \(1, 2, 3\) are not in classes.yaml"):
        dataset[dataset.ids.index("tile_001")]


@pytest.mark.parametrize("bad_id", ["../x", "/etc/passwd", "2007_000000/../../../x"])
def test_an_id_outside_the_root_is_refused_naming_the_list(tmp_path: Path, bad_id: str) -> None:
    root = make_voc(tmp_path / "VOC2012")
    split_file = root / "ImageSets" / "Segmentation" / "train.txt"
    split_file.write_text(f"2007_000000\n\n{bad_id}\n")
    with pytest.raises(ValueError) as raised:
        VOCSegmentation(root, "train")
    assert str(raised.value) == (f"{split_file}, line 3: id {bad_id!r} points outside the "
                                 "dataset folder; list ids relative to it (no leading / and "
                                 "no ..)")


def test_folder_and_sbd_lists_refuse_ids_outside_the_root(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "folder", splits=True)
    (folder / "splits" / "val.txt").write_text("tile_004\n../../etc/passwd\n")
    with pytest.raises(ValueError, match=r"val.txt, line 2: id '../../etc/passwd' points out"):
        FolderSegmentation(folder, "val")
    voc = make_voc(tmp_path / "VOC2012")
    sbd = make_sbd(tmp_path / "benchmark_RELEASE", voc)
    (sbd / "dataset" / "train.txt").write_text("/etc/passwd\n")
    with pytest.raises(ValueError, match=r"train.txt, line 1: id '/etc/passwd' points outside"):
        VOCAugSegmentation(voc, sbd, "train_aug")


def test_a_bom_at_the_start_of_a_split_file_is_dropped(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "VOC2012")
    split_file = root / "ImageSets" / "Segmentation" / "train.txt"
    split_file.write_text("\ufeff" + split_file.read_text(), encoding="utf-8")
    assert VOCSegmentation(root, "train").ids[0] == "2007_000000"


@pytest.mark.parametrize("character", ["\ufeff", "\u200b", "\x1b"])
def test_an_id_that_does_not_print_is_refused_naming_the_line(tmp_path: Path,
                                                              character: str) -> None:
    root = make_voc(tmp_path / "VOC2012")
    split_file = root / "ImageSets" / "Segmentation" / "train.txt"
    split_file.write_text(f"2007_000000\n2007_{character}000001\n", encoding="utf-8")
    with pytest.raises(ValueError) as raised:
        VOCSegmentation(root, "train")
    assert str(raised.value) == (f"{split_file}, line 2: id {'2007_' + character + '000001'!r} "
                                 "holds a character that does not print; remove it (save "
                                 "the file as plain UTF-8 text)")


def test_a_root_that_is_a_file_says_so(tmp_path: Path) -> None:
    archive = tmp_path / "dataset.zip"
    archive.write_bytes(b"PK\x05\x06")
    for reader in (VOCSegmentation, Cityscapes, ADE20K, FolderSegmentation):
        with pytest.raises(NotADirectoryError, match=f"dataset root is a file, not a folder: "
                                                     f"{archive}; set dataset.root"):
            reader(archive, "train")
    voc = make_voc(tmp_path / "VOC2012")
    with pytest.raises(NotADirectoryError, match="SBD folder is a file, not a folder"):
        VOCAugSegmentation(voc, archive, "train_aug")


def test_empty_split(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "VOC2012")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("")
    with pytest.raises(ValueError, match="val.txt lists no samples"):
        VOCSegmentation(root, "val")


def test_skipped_samples_leave_the_batch_and_are_reported(tmp_path: Path, caplog) -> None:
    root, planted = faulty_voc(tmp_path / "VOC2012")
    dataset = VOCSegmentation(root, "train", on_error="skip")
    assert "skipped" in dataset[0] and dataset[5]["id"] == "2007_000005"
    loader = build_loader(dataset, 2, train=True)
    with caplog.at_level(logging.WARNING, logger="seg.engine"):
        batches = endless(loader, 0)
        seen = [next(batches) for _ in range(1)]  # 3 batches of 2, two of them all bad
        next(batches)  # the next epoch's first good batch: the first epoch was reported
    assert seen[0][0] == 0 and len(seen[0][2]["mask"]) == 1
    assert "epoch 0 skipped 5 bad sample(s)" in caplog.text
    assert str(planted[0][0]) in caplog.text


def test_a_worker_error_reaches_the_user_as_one_line(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "VOC2012", train=2)
    path = corrupt_jpeg(root, "2007_000001")
    loader = build_loader(VOCSegmentation(root, "train"), 2, train=True, num_workers=1)
    with pytest.raises(SampleError) as raised:
        next(iter(loader))
    assert "DataLoader worker" in str(raised.value)  # what torch makes of it
    assert one_line(str(raised.value)) == f"{path}: {NOT_AN_IMAGE}"


# -- seg-data check -----------------------------------------------------------------------


def test_check_lists_every_fault_and_exits_1(tmp_path: Path, capsys) -> None:
    root, planted = faulty_voc(tmp_path / "VOC2012")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("")
    code = seg_data(["check", "dataset=voc", f"dataset.root={root}", "dataset.num_workers=0"])
    out = capsys.readouterr().out
    assert code == 1
    assert "train: 6 samples, 1 ok, 5 problem(s)" in out and "6 problem(s):" in out
    for path, _ in planted:
        assert str(path) in out
    assert "val.txt lists no samples" in out


def test_check_lists_an_empty_image_and_a_duplicate_id(tmp_path: Path, capsys) -> None:
    root = make_voc(tmp_path / "VOC2012")
    empty = root / "JPEGImages" / "2007_000001.jpg"
    empty.write_bytes(b"")
    split_file = root / "ImageSets" / "Segmentation" / "train.txt"
    split_file.write_text(split_file.read_text() + "2007_000002\n")
    code = seg_data(["check", "dataset=voc", f"dataset.root={root}", "dataset.num_workers=0"])
    out = capsys.readouterr().out
    assert code == 1
    assert "train: 5 samples, 4 ok, 2 problem(s)" in out and "pixels per class" in out
    assert f"[train] {split_file}: id '2007_000002' is listed 2 times; list it once" in out
    assert f"[train] {empty}: image file is empty (0 bytes); replace the file" in out
    assert "val: 2 samples, 2 ok, 0 problem(s)" in out


def test_check_shows_20_problems_per_split_and_a_summary(tmp_path: Path, capsys) -> None:
    root = make_voc(tmp_path / "VOC2012")
    split_file = root / "ImageSets" / "Segmentation" / "train.txt"
    missing = [f"gone_{n:03d}" for n in range(30)]
    split_file.write_text(split_file.read_text() + "".join(f"{i}\n" for i in missing))
    (root / "SegmentationClass" / "2007_000000.png").write_bytes(b"")
    code = seg_data(["check", "dataset=voc", f"dataset.root={root}", "dataset.num_workers=0"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert "train: 34 samples, 3 ok, 31 problem(s)" in lines and "31 problem(s):" in lines
    assert sum(line.startswith("  [train] ") for line in lines) == 20
    assert "  ... and 11 more in train" in lines
    assert lines[-1] == ("summary: train: 31 problem(s) (30 missing files, 1 unreadable "
                         "files)")


def test_check_a_root_that_is_a_file(tmp_path: Path, capsys) -> None:
    archive = tmp_path / "VOC2012.tar"
    archive.write_bytes(b"not a folder")
    assert seg_data(["check", "dataset=voc", f"dataset.root={archive}"]) == 1
    out = capsys.readouterr().out
    assert f"[val] dataset root is a file, not a folder: {archive}; set dataset.root" in out


def test_check_on_a_clean_tree(tmp_path: Path, capsys) -> None:
    root = make_folder(tmp_path / "folder", rgb=True)
    code = seg_data(["check", "dataset=folder", f"dataset.root={root}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "train: 5 samples, 5 ok, 0 problem(s)" in out and "no problems" in out
    counts = {line.split()[1]: int(line.split()[2].replace(",", ""))
              for line in out.splitlines() if line.strip()[:1].isdigit()}
    assert set(counts) == {"background", "crack", "moss"}
    assert sum(counts.values()) + int(out.split("ignore (255)")[1].split()[0].replace(",", "")) \
        == 6 * SIZE[0] * SIZE[1]


def test_check_a_wrong_key_is_one_line(capsys) -> None:
    assert seg_data(["check", "dataset=nonesuch"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nonesuch" in err and len(err.splitlines()) == 1


# -- training on each layout --------------------------------------------------------------


@pytest.mark.parametrize("name", ["voc", "voc_aug", "cityscapes", "ade20k", "folder"])
def test_trains_and_evaluates_on_each_layout(compose_train, tmp_path: Path, name: str) -> None:
    layout = make_layout(name, tmp_path / "data")
    cfg = compose_train(f"dataset={name}", *(f"{k}={v}" for k, v in layout.items()),
                        "dataset.crop_size=32", "dataset.num_workers=0")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["iterations"] == 2 and 0.0 <= metrics["mIoU"] <= 1.0
    assert len(metrics["per_class_iou"]) == cfg.dataset.num_classes
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["iterations"] == 2


def test_training_on_a_corrupt_file_exits_with_one_line(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "VOC2012", train=2)
    path = corrupt_jpeg(root, "2007_000001")
    result = subprocess.run(
        [sys.executable, "-m", "seg.cli.train", "debug=tiny", "dataset=voc",
         f"dataset.root={root}", "dataset.crop_size=32", "dataset.num_workers=1",
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: {path}: {NOT_AN_IMAGE}"
    assert "Traceback" not in result.stderr
