"""Issue 40, item 7: the augmentation keys (dataset.rotation, hflip, vflip, blur), which
leave the training pipeline as it was when off, and ``seg-data show``, which writes what
the model trains on as PNG files."""

from __future__ import annotations

import random
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
from albumentations.pytorch import ToTensorV2
from PIL import Image

from seg.cli.data import main as seg_data
from seg.data.palette import resolve_palette
from seg.data.pixels import mean_colour
from seg.data.sampler import TrainSampler
from seg.data.transforms import RandomShortSideScale, augmentation, train_transform
from seg.drawing import overlay

CROP = 48  # compose_train's dataset.crop_size, and seg-data show's in these tests
SIZE = 40  # the test images' side: crops of this size take the whole (unscaled) image
CLASSES = (0, 7)  # two far-apart labels: any blending of the mask would make 1 to 6


def pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random uint8 image and a mask of CLASSES, both SIZE x SIZE."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    mask = rng.choice(np.array(CLASSES, np.uint8), (SIZE, SIZE))
    return image, mask


def whole_image(**settings: object) -> A.Compose:
    """A pipeline that keeps the image as it is but for ``settings``: no scale, a crop of
    the whole image, no horizontal flip, no jitter."""
    return train_transform(SIZE, **{"scale_range": (1.0, 1.0), "hflip": 0.0,
                                    "color_jitter": 0.0, **settings})


def run(transform: A.Compose, image: np.ndarray, mask: np.ndarray, seed: int
        ) -> tuple[np.ndarray, np.ndarray]:
    """``transform`` of the pair, seeded as a training sample is (seg.data.base)."""
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    out = transform(image=image, mask=mask)
    return out["image"].permute(1, 2, 0).numpy(), out["mask"].numpy()


# -- defaults: the pipeline of before --------------------------------------------------------


def test_the_config_defaults_build_the_pipeline_of_before(compose_train) -> None:
    """shapes' keys as configured: the same steps as before the new keys, drawing the same
    random numbers, so the same crops for the same seeds."""
    data = compose_train().dataset
    assert (data.rotation, data.hflip, data.vflip, data.blur) == (0, 0.5, 0.0, 0.0)
    new = augmentation(data)
    jitter = data.color_jitter
    before = A.Compose([  # train_transform's steps before the new keys, as written then
        RandomShortSideScale(tuple(data.scale_range), data.base_size),
        A.PadIfNeeded(min_height=CROP, min_width=CROP, border_mode=cv2.BORDER_CONSTANT,
                      fill=0, fill_mask=255),
        A.RandomCrop(height=CROP, width=CROP),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=jitter / 4,
                      p=0.5),
        ToTensorV2(),
    ])
    assert [type(step).__name__ for step in new.transforms] == [
        "RandomShortSideScale", "PadIfNeeded", "RandomCrop", "HorizontalFlip", "ColorJitter",
        "ToTensorV2"]
    assert repr(new) == repr(before)
    image, mask = pair()
    for seed in range(6):
        new_image, new_mask = run(new, image, mask, seed)
        old_image, old_mask = run(before, image, mask, seed)
        assert np.array_equal(new_image, old_image) and np.array_equal(new_mask, old_mask)


def test_a_key_set_to_zero_adds_no_step() -> None:
    steps = whole_image(rotation=0, vflip=0.0, blur=0.0).transforms
    assert [type(step).__name__ for step in steps] == [
        "RandomShortSideScale", "PadIfNeeded", "RandomCrop", "ToTensorV2"]


# -- each key does what it says -------------------------------------------------------------


def test_vflip_flips_image_and_mask_together() -> None:
    image, mask = pair()
    flipped_image, flipped_mask = run(whole_image(vflip=1.0), image, mask, seed=0)
    assert np.array_equal(flipped_image, image[::-1]) and np.array_equal(flipped_mask, mask[::-1])
    kept_image, kept_mask = run(whole_image(), image, mask, seed=0)
    assert np.array_equal(kept_image, image) and np.array_equal(kept_mask, mask)


def test_hflip_is_a_key_of_its_own() -> None:
    image, mask = pair()
    flipped_image, flipped_mask = run(whole_image(hflip=1.0), image, mask, seed=0)
    assert np.array_equal(flipped_image, image[:, ::-1])
    assert np.array_equal(flipped_mask, mask[:, ::-1])


def test_rotation_keeps_the_labels_and_ignores_the_corners() -> None:
    """Nearest for the mask (only CLASSES and 255), the uncovered corners 255 in the mask
    and the mean colour in the image, what the model's normalisation maps to 0."""
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    fill = np.array(mean_colour(mean, std))
    image, mask = pair()
    transform = whole_image(rotation=45, mean=mean, std=std)
    assert [type(step).__name__ for step in transform.transforms][1] == "Rotate"
    corners, filled = 0, 0
    for seed in range(8):
        rotated_image, rotated_mask = run(transform, image, mask, seed)
        assert set(np.unique(rotated_mask)) <= {*CLASSES, 255}
        assert np.isin(rotated_mask, CLASSES).mean() > 0.5  # most of the image is still there
        ignored = rotated_mask == 255
        corners += int(ignored[0, 0] and ignored[-1, -1])
        # away from the rotated image's edge (where it blends with the fill): the fill
        inside = cv2.erode(ignored.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert (np.abs(rotated_image[inside] - fill) <= 1).all()
        filled += int(inside.sum())
    assert corners >= 4 and filled > 100


def test_blur_changes_the_image_but_not_the_mask() -> None:
    image, mask = pair()
    blurred_image, blurred_mask = run(whole_image(blur=1.0), image, mask, seed=0)
    assert np.array_equal(blurred_mask, mask)
    assert not np.array_equal(blurred_image, image)
    # a blur averages neighbours: the random image's pixel-to-pixel changes shrink
    assert np.abs(np.diff(blurred_image.astype(int), axis=1)).mean() \
        < 0.8 * np.abs(np.diff(image.astype(int), axis=1)).mean()


def test_the_config_keys_reach_the_pipeline(compose_train) -> None:
    data = compose_train("dataset.rotation=10", "dataset.vflip=0.3", "dataset.blur=0.2",
                         "dataset.hflip=0").dataset
    steps = {type(step).__name__: step for step in augmentation(data).transforms}
    assert "HorizontalFlip" not in steps
    assert steps["Rotate"].limit == (-10, 10) and steps["VerticalFlip"].p == 0.3
    assert steps["GaussianBlur"].p == 0.2
    assert steps["Rotate"].fill == pytest.approx(mean_colour(data.mean, data.std))


def test_training_reads_the_new_keys(compose_train) -> None:
    from seg.data.readers import training_split

    data = compose_train("dataset.vflip=1").dataset
    steps = [type(step).__name__ for step in training_split(data).transform.transforms]
    assert "VerticalFlip" in steps


# -- bad values -----------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "message"), [
    ({"rotation": -5}, "dataset.rotation must be a number from 0 to 180, got -5"),
    ({"rotation": 200}, "dataset.rotation must be a number from 0 to 180, got 200"),
    ({"rotation": "10"}, "dataset.rotation must be a number from 0 to 180, got '10'"),
    ({"vflip": 1.5}, "dataset.vflip must be a number from 0 to 1, got 1.5"),
    ({"vflip": True}, "dataset.vflip must be a number from 0 to 1, got True"),
    ({"hflip": -0.5}, "dataset.hflip must be a number from 0 to 1, got -0.5"),
    ({"blur": 2}, "dataset.blur must be a number from 0 to 1, got 2"),
    ({"blur": None}, "dataset.blur must be a number from 0 to 1, got None"),
])
def test_a_bad_value_is_one_line_naming_its_key(setting: dict, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        train_transform(32, **setting)
    assert str(raised.value) == message


def test_a_bad_value_on_the_command_line_is_one_line(shapes_root: Path, tmp_path: Path,
                                                     capsys) -> None:
    out = tmp_path / "preview"
    assert seg_data(["show", "--out", str(out), f"dataset.root={shapes_root}",
                     "dataset.blur=abc"]) == 1
    assert capsys.readouterr().err == (
        "error: dataset.blur must be a number from 0 to 1, got 'abc'\n")
    assert not out.exists()  # refused before anything was made


# -- seg-data show --------------------------------------------------------------------------


def show(shapes_root: Path, *arguments: str) -> int:
    return seg_data(["show", *arguments, "dataset=shapes", f"dataset.root={shapes_root}",
                     f"dataset.crop_size={CROP}", "dataset.num_workers=0"])


def pictures(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(path).convert("RGB")) for path in sorted(folder.iterdir())]


def test_show_writes_what_training_reads(shapes_root: Path, tmp_path: Path, compose_train,
                                         capsys) -> None:
    """Each file: the crop the training split gives for the run's first keys (seed 0),
    and beside it the same crop with its mask over it, as seg.drawing.overlay draws it."""
    from seg.data.readers import training_split

    out = tmp_path / "preview"
    assert show(shapes_root, "--count", "3", "--out", str(out)) == 0
    files = sorted(out.iterdir())
    assert [path.suffix for path in files] == [".png"] * 3
    assert capsys.readouterr().out == (
        f"wrote 3 augmented training samples of dataset=shapes to {out} (each: the crop | "
        "its mask over it)\n")
    data = compose_train().dataset
    dataset, palette = training_split(data), np.array(resolve_palette(data.palette, 8),
                                                      np.uint8)
    for picture, path, key in zip(pictures(out), files, TrainSampler(len(dataset), seed=0),
                                  strict=False):
        item = dataset[key]
        image = item["image"].permute(1, 2, 0).byte().numpy()
        mask = item["mask"].byte().numpy()
        assert picture.shape == (CROP, 2 * CROP, 3)
        assert path.name.endswith(f"_{item['id']}.png")
        assert np.array_equal(picture[:, :CROP], image)
        assert np.array_equal(picture[:, CROP:], overlay(image, mask, palette, 0.5))
        painted = (mask != 0) & (mask != 255)
        assert painted.any() and (picture[:, CROP:][painted] != image[painted]).any()
        unpainted = mask == 255
        assert np.array_equal(picture[:, CROP:][unpainted], image[unpainted])


def test_show_seeds_as_a_run_does(shapes_root: Path, tmp_path: Path) -> None:
    folders = [tmp_path / name for name in ("a", "b", "c")]
    for folder, seed in zip(folders, ("5", "5", "6"), strict=True):
        assert show(shapes_root, "--count", "2", "--seed", seed, "--out", str(folder)) == 0
    first, again, other = (pictures(folder) for folder in folders)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_show_applies_the_keys(shapes_root: Path, tmp_path: Path) -> None:
    """vflip=1, same seed: each crop is vflip=0's upside down (scale 1 and crops of the
    whole 64 px images, so that nothing else moves)."""
    plain, flipped = tmp_path / "plain", tmp_path / "flipped"
    fixed = ["dataset.scale_range=[1.0,1.0]", "dataset.hflip=0", "dataset.color_jitter=0",
             "dataset.crop_size=64"]
    assert seg_data(["show", "--count", "2", "--out", str(plain), f"dataset.root={shapes_root}",
                     *fixed]) == 0
    assert seg_data(["show", "--count", "2", "--out", str(flipped),
                     f"dataset.root={shapes_root}", *fixed, "dataset.vflip=1"]) == 0
    for upright, upside_down in zip(pictures(plain), pictures(flipped), strict=True):
        assert np.array_equal(upside_down[::-1, :64], upright[:, :64])


def test_show_makes_a_fresh_folder_each_time(shapes_root: Path, tmp_path: Path,
                                             monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert show(shapes_root, "--count", "2") == 0
    folders = sorted((tmp_path / "data_preview").iterdir())
    assert [folder.name for folder in folders] == ["shapes-1", "shapes-2"]
    assert [len(list(folder.iterdir())) for folder in folders] == [2, 2]


def test_show_never_writes_into_a_folder_that_holds_anything(shapes_root: Path,
                                                             tmp_path: Path, capsys) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "001_train_00000.png").write_bytes(b"mine")
    assert show(shapes_root, "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out} is not empty") and err.count("\n") == 1
    assert [path.name for path in out.iterdir()] == ["001_train_00000.png"]
    assert (out / "001_train_00000.png").read_bytes() == b"mine"


def test_show_into_an_empty_folder_or_refuses_a_file(shapes_root: Path, tmp_path: Path,
                                                     capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert show(shapes_root, "--count", "1", "--out", str(empty)) == 0
    assert len(list(empty.iterdir())) == 1
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    assert show(shapes_root, "--out", str(a_file)) == 1
    assert f"--out {a_file} is a file, not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "keep"


def test_show_checks_its_options(shapes_root: Path, tmp_path: Path, capsys) -> None:
    assert show(shapes_root, "--count", "0", "--out", str(tmp_path / "zero")) == 1
    assert capsys.readouterr().err == "error: --count must be a positive integer, got 0\n"
    assert not (tmp_path / "zero").exists()
