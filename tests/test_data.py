"""Tests for the shapes generator, the VOC dataset and the augmentation pipelines, and
for what importing seg.data leaves alone (OpenCV's and PIL's process-wide settings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from albumentations.pytorch import ToTensorV2
from PIL import Image

from seg.data.loader import build_loader
from seg.data.palette import flat_palette, voc_palette
from seg.data.pixels import IMAGENET_MEAN, IMAGENET_STD, mean_colour
from seg.data.readers.voc import VOCSegmentation
from seg.data.synthetic.procedural import write_voc_dataset
from seg.data.synthetic.shapes import SHAPES_CLASSES, generate_shapes, render_shapes_sample
from seg.data.transforms import eval_transform, train_transform
from tests.layouts import generated_voc_masks

NUM_CLASSES = len(SHAPES_CLASSES)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shapes(tmp_path_factory.mktemp("tiny"), num_train=6, num_val=3, image_size=64)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Big enough for every class to show up and for stroke widths to be measurable.
    return generate_shapes(
        tmp_path_factory.mktemp("sample"), num_train=40, num_val=0, image_size=128, seed=3
    )


def _masks(root: Path) -> list[np.ndarray]:
    return [np.array(Image.open(p)) for p in sorted((root / "SegmentationClass").glob("*.png"))]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_palette() -> None:
    palette = voc_palette()
    assert len(palette) == 256
    assert palette[:3] == [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
    assert palette[255] == (224, 224, 192)
    flat = flat_palette()
    assert len(flat) == 768 and flat[3:6] == [128, 0, 0]


def test_layout_and_lists(tiny: Path) -> None:
    for mask in generated_voc_masks(tiny, num_train=6, num_val=3, size=64):
        assert mask.max() < NUM_CLASSES


def test_generator_is_deterministic(tiny: Path, tmp_path: Path) -> None:
    again = generate_shapes(tmp_path / "again", num_train=6, num_val=3, image_size=64)
    assert _files(again) == _files(tiny)

    other = _files(generate_shapes(tmp_path / "other", 6, 3, image_size=64, seed=1))
    reference = _files(tiny)
    assert all(other[k] != reference[k] for k in reference if k.startswith("JPEGImages"))


def test_worker_processes_write_the_same_files(tiny: Path, tmp_path: Path) -> None:
    parallel = write_voc_dataset(tmp_path / "parallel", render_shapes_sample, num_train=6,
                                 num_val=3, image_size=64, seed=0, workers=2)
    assert _files(parallel) == _files(tiny)


def test_val_does_not_depend_on_train_count(tiny: Path, tmp_path: Path) -> None:
    fewer = generate_shapes(tmp_path / "fewer", num_train=2, num_val=3, image_size=64)
    for name in (tiny / "ImageSets" / "Segmentation" / "val.txt").read_text().split():
        for rel in (f"JPEGImages/{name}.jpg", f"SegmentationClass/{name}.png"):
            assert (fewer / rel).read_bytes() == (tiny / rel).read_bytes()


def test_every_class_appears(sample: Path) -> None:
    masks = _masks(sample)
    present = set(np.unique(np.stack(masks)).tolist())
    assert present == set(range(NUM_CLASSES))
    # Thin and small objects must be common, not just present somewhere.
    dot = SHAPES_CLASSES.index("dot")
    assert sum((m == dot).any() for m in masks) >= 0.8 * len(masks)
    line = SHAPES_CLASSES.index("line")
    assert sum((m == line).any() for m in masks) >= 0.8 * len(masks)


def _erode(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Binary erosion by a size x size box (min-pool via max-pool of the complement)."""
    inverse = (~mask).float()[None, None]
    return F.max_pool2d(inverse, size, stride=1, padding=size // 2)[0, 0] == 0


def test_lines_are_thin(sample: Path) -> None:
    cls = SHAPES_CLASSES.index("line")
    total = survived = 0
    for mask in _masks(sample):
        region = torch.from_numpy(mask == cls)
        total += int(region.sum())
        survived += int(_erode(region, 5).sum())
    assert total > 0
    # Strokes are at most 4 px wide, so a 5x5 erosion removes them (up to rare overlaps).
    assert survived <= 0.02 * total


def test_dataset_items(tiny: Path) -> None:
    ds = VOCSegmentation(tiny, "val")
    assert len(ds) == 3 and ds.ids == ["val_00000", "val_00001", "val_00002"]
    item = ds[1]
    assert item["id"] == "val_00001"
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 64, 64)
    assert item["image"].min() >= 0.0 and item["image"].max() <= 1.0
    assert item["mask"].dtype == torch.long and item["mask"].shape == (64, 64)
    expected = np.array(Image.open(tiny / "SegmentationClass" / "val_00001.png"))
    assert torch.equal(item["mask"], torch.from_numpy(expected).long())


def test_dataset_with_transforms(tiny: Path) -> None:
    item = VOCSegmentation(tiny, "train", transform=train_transform(48))[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 48, 48)
    assert item["mask"].dtype == torch.long and item["mask"].shape == (48, 48)

    item = VOCSegmentation(tiny, "val", transform=eval_transform(pad_to_multiple=32))[0]
    assert item["image"].shape == (3, 64, 64) and item["mask"].dtype == torch.long


def test_seeded_augmentations_repeat_and_draw_independently(tiny: Path) -> None:
    # a flip and an inversion at p=0.5 each: with one generator per transform from the
    # same seed (albumentations' set_random_seed) they would always be decided alike
    transform = A.Compose([A.HorizontalFlip(p=0.5), A.InvertImg(p=0.5), ToTensorV2()])
    plain, augmented = VOCSegmentation(tiny, "val"), VOCSegmentation(tiny, "val",
                                                                      transform=transform)
    original = (plain[0]["image"] * 255).round()
    decisions = set()
    for seed in range(16):
        image = augmented[(0, seed)]["image"]
        assert torch.equal(image, augmented[(0, seed)]["image"])  # the seed decides
        inverted = bool(image.mean() != original.mean())  # a flip keeps the mean
        flipped = not torch.equal(image, 255 - original if inverted else original)
        decisions.add((flipped, inverted))
    assert len(decisions) == 4  # every combination of the two draws occurs


def test_cached_dataset_decodes_once_and_gives_the_same_samples(tiny: Path) -> None:
    plain, cached = VOCSegmentation(tiny, "val"), VOCSegmentation(tiny, "val", cache=True)
    first = cached.load(1)
    first[0][:] = 0  # a transform writing into its input must not reach the cache
    image, mask = cached.load(1)
    assert np.array_equal(image, plain.load(1)[0]) and np.array_equal(mask, plain.load(1)[1])
    assert list(cached.cache) == [1]  # decoded once, on first read
    assert torch.equal(cached[1]["image"], plain[1]["image"])


def test_a_batch_larger_than_the_training_split_is_an_error(tiny: Path) -> None:
    with pytest.raises(ValueError, match="fewer than one batch of 64 per process: lower the"):
        build_loader(VOCSegmentation(tiny, "train"), 64, train=True)


def test_missing_paths_raise(tmp_path: Path, tiny: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        VOCSegmentation(missing, "train")
    with pytest.raises(FileNotFoundError, match="test.txt"):
        VOCSegmentation(tiny, "test")


def test_undecodable_image_raises(tmp_path: Path, tiny: Path) -> None:
    root = generate_shapes(tmp_path / "broken", num_train=1, num_val=0, image_size=32)
    (root / "JPEGImages" / "train_00000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="train_00000.jpg"):
        VOCSegmentation(root, "train")[0]


def _random_pair(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = rng.integers(0, NUM_CLASSES, (height, width), dtype=np.uint8)
    return image, mask


def test_train_transform_crop_and_labels() -> None:
    image, mask = _random_pair(40, 50)
    transform = train_transform((32, 48))
    for _ in range(10):
        out = transform(image=image, mask=mask)
        assert tuple(out["image"].shape) == (3, 32, 48)
        assert tuple(out["mask"].shape) == (32, 48)
        assert set(out["mask"].unique().tolist()) <= set(range(NUM_CLASSES)) | {255}

    # Upscaling only, so the crop never needs padding and no ignore label may appear.
    out = train_transform(32, scale_range=(1.0, 2.0))(image=image, mask=mask)
    assert 255 not in out["mask"]


@pytest.mark.parametrize(("setting", "message"), [
    ({"crop_size": 0}, "dataset.crop_size must be a positive integer or [height, width], got 0"),
    ({"crop_size": [512, -1]}, "dataset.crop_size must be a positive integer or [height, "
                               "width], got [512, -1]"),
    ({"scale_range": [0.0, 2.0]}, "dataset.scale_range must be [low, high] with 0 < low <= "
                                  "high, got [0.0, 2.0]"),
    ({"scale_range": [2.0, 0.5]}, "dataset.scale_range must be [low, high] with 0 < low <= "
                                  "high, got [2.0, 0.5]"),
    ({"color_jitter": -0.1}, "dataset.color_jitter must be a number >= 0, got -0.1"),
    ({"base_size": 0}, "dataset.base_size must be a positive integer or null, got 0"),
])
def test_a_bad_augmentation_setting_is_one_line_naming_the_key(setting: dict, message: str
                                                               ) -> None:
    with pytest.raises(ValueError) as raised:
        train_transform(**{"crop_size": 32, **setting})
    assert str(raised.value) == message


def test_crop_size_zero_in_the_config_is_one_line(compose_train) -> None:
    from seg.data.readers import training_split

    cfg = compose_train("dataset.crop_size=0")
    with pytest.raises(ValueError) as raised:
        training_split(cfg.dataset)
    assert str(raised.value) == (
        "dataset.crop_size must be a positive integer or [height, width], got 0")


def test_max_image_pixels_reaches_both_splits(compose_train) -> None:
    from seg.data.readers import training_split, validation_split

    cfg = compose_train("dataset.max_image_pixels=4096")
    assert training_split(cfg.dataset).max_image_pixels == 4096
    assert validation_split(cfg.dataset).max_image_pixels == 4096


def test_train_transform_pads_with_ignore() -> None:
    image, mask = _random_pair(40, 50)
    transform = train_transform(64, scale_range=(1.0, 1.0), hflip=0.0, color_jitter=0.0)
    out = transform(image=image, mask=mask)
    # Centre padding of a 40x50 image to 64x64: 12 rows on top, 7 columns on the left.
    inner = (slice(12, 52), slice(7, 57))
    assert torch.equal(out["mask"][inner], torch.from_numpy(mask))
    outside = torch.ones(64, 64, dtype=torch.bool)
    outside[inner] = False
    assert (out["mask"][outside] == 255).all()
    assert out["image"].dtype == torch.uint8  # as decoded: the model normalises
    assert (out["image"][:, outside] == 0).all()  # black, as the crop of a larger image


def test_eval_transform_pads_to_multiple() -> None:
    image, mask = _random_pair(40, 50)
    out = eval_transform(pad_to_multiple=32)(image=image, mask=mask)
    assert tuple(out["image"].shape) == (3, 64, 64)
    assert torch.equal(out["mask"][:40, :50], torch.from_numpy(mask))
    assert (out["mask"][40:] == 255).all() and (out["mask"][:, 50:] == 255).all()
    # the mean colour, which the model's normalisation maps to 0
    fill = torch.tensor(mean_colour(IMAGENET_MEAN, IMAGENET_STD)).view(3, 1, 1)
    assert (out["image"][:, 40:] == fill).all() and (out["image"][:, :, 50:] == fill).all()

    plain = eval_transform()(image=image, mask=mask)
    assert tuple(plain["image"].shape) == (3, 40, 50)


def test_eval_batches_pad_mixed_sizes_with_ignore() -> None:
    from seg.data.loader import collate

    items = [
        {"image": torch.ones(3, 4, 6), "mask": torch.zeros(4, 6, dtype=torch.long), "id": "a"},
        {"image": torch.ones(3, 5, 3), "mask": torch.ones(5, 3, dtype=torch.long), "id": "b"},
    ]
    batch = collate(items)
    assert batch["image"].shape == (2, 3, 5, 6) and batch["mask"].shape == (2, 5, 6)
    assert batch["id"] == ["a", "b"]
    assert (batch["mask"][0, 4] == 255).all() and (batch["mask"][1, :, 3:] == 255).all()
    assert batch["image"][0, :, 4].sum() == 0 and batch["image"][1, :, :5, :3].min() == 1


def test_auto_workers_leave_small_cpu_runs_in_the_main_process(monkeypatch) -> None:
    from seg.data.loader import resolve_num_workers

    monkeypatch.setattr("seg.data.loader.available_cpus", lambda: 16)
    assert resolve_num_workers("auto", "cpu", 160) == 0  # the shapes recipe on a CPU
    assert resolve_num_workers("auto", "cpu", [128, 256]) == 0
    assert resolve_num_workers("auto", "cpu", 512) == 8  # VOC's crops: decoding costs
    assert resolve_num_workers("auto", "cuda", 160) == 8  # a GPU waits for its data
    assert resolve_num_workers(3, "cpu", 160) == 3  # a number is a number


# What a child process prints: OpenCV's thread count and log level and PIL's pixel limit,
# the process-wide settings that decoding changes.
SETTINGS = """
import json
import cv2
from PIL import Image

def settings():
    return [cv2.getNumThreads(), cv2.utils.logging.getLogLevel(), Image.MAX_IMAGE_PIXELS]
"""


def run_python(code: str, *args: str) -> dict:
    """What the code, run in a fresh interpreter, prints as JSON on its last line."""
    result = subprocess.run([sys.executable, "-P", "-c", code, *args], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_seg_data_changes_no_process_wide_setting() -> None:
    """Every module of seg.data imported, every reader registered: nothing is configured
    until something is decoded, so a program that only imports keeps its own settings."""
    found = run_python(SETTINGS + """
import importlib, pkgutil
before = settings()
import seg.data
names = [module.name for module in pkgutil.walk_packages(seg.data.__path__, "seg.data.")]
for name in names:
    importlib.import_module(name)
from seg.data.readers import catalogue
catalogue()
print(json.dumps({"before": before, "after": settings(), "modules": names}))
""")
    assert {"seg.data.decoding", "seg.data.base", "seg.data.readers.voc",
            "seg.data.synthetic.shapes"} <= set(found["modules"])
    assert found["after"] == found["before"]


def test_the_first_read_configures_the_decoders(tmp_path: Path) -> None:
    """... and the first image read applies them: OpenCV single-threaded (workers are the
    parallelism) and silent (a bad file is one SampleError line), PIL's limit lifted (the
    header is checked against dataset.max_image_pixels instead)."""
    path = tmp_path / "image.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    found = run_python(SETTINGS + """
import sys
from pathlib import Path
from seg.data.decoding import read_image
before = settings()
read_image(Path(sys.argv[1]))
after = settings()
cv2.setNumThreads(0)  # what the thread count reads as once set to none, on this build
print(json.dumps({"before": before, "after": after, "none": cv2.getNumThreads(),
                  "silent": cv2.utils.logging.LOG_LEVEL_SILENT}))
""", str(path))
    assert found["after"] == [found["none"], found["silent"], None]
    assert found["before"][1:] != found["after"][1:]  # the defaults were in place before


def test_the_label_constants_import_nothing_heavy() -> None:
    """The engine's loss and metrics take IGNORE_INDEX from seg.data.labels: importing it
    loads no decoder, no array or tensor library."""
    loaded = run_python("""
import json, sys
from seg.data.labels import IGNORE_INDEX
print(json.dumps({"value": IGNORE_INDEX,
                  "loaded": [m for m in ("torch", "numpy", "cv2", "PIL") if m in sys.modules]}))
""")
    assert loaded == {"value": 255, "loaded": []}
