"""The "scenes" generator: VOC layout, determinism, the properties that make it differ from
"shapes" (thin structures, occlusion, a wide range of scales), and dataset=scenes in
seg-train's config."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from seg.cli.command import CONFIG_MODULE
from seg.data.readers import training_split
from seg.data.synthetic.scenes import (
    BLOB,
    SCENES_CLASSES,
    SLAB,
    SPECK,
    THIN_CLASSES,
    generate_scenes,
    label_map,
    render_scenes_sample,
    scene_layers,
)
from seg.training import train
from tests.layouts import generated_voc_masks

NUM_CLASSES = len(SCENES_CLASSES)
SIZE = 192  # the default: widths and sizes below are stated for it
# A 4x4 square fits in no stroke 3 px wide or less: opening with it erases such strokes.
WIDER_THAN_3PX = np.ones((4, 4), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_scenes(tmp_path_factory.mktemp("scenes"), num_train=4, num_val=2,
                           image_size=64)


@pytest.fixture(scope="module")
def masks() -> list[np.ndarray]:
    """Class masks (SIZE, SIZE) of a few full-size scenes, rendered without files."""
    return [render_scenes_sample(np.random.default_rng(seed), SIZE)[1] for seed in range(6)]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name="train", overrides=["dataset=scenes", *overrides])


def test_layout_lists_and_labels(tiny: Path) -> None:
    for mask in generated_voc_masks(tiny, num_train=4, num_val=2, size=64):
        assert set(np.unique(mask)) <= set(range(NUM_CLASSES)) | {255}


def test_generator_is_deterministic(tiny: Path, tmp_path: Path) -> None:
    again = generate_scenes(tmp_path / "again", num_train=4, num_val=2, image_size=64)
    assert _files(again) == _files(tiny)
    other = _files(generate_scenes(tmp_path / "other", 4, 2, image_size=64, seed=1))
    reference = _files(tiny)
    assert all(other[k] != reference[k] for k in reference if k.startswith("JPEGImages"))


def test_every_class_shows_up(masks: list[np.ndarray]) -> None:
    assert set(np.unique(np.stack(masks))) == set(range(NUM_CLASSES))


def test_thin_classes_are_at_most_3px_wide(masks: list[np.ndarray]) -> None:
    for cls in (*THIN_CLASSES, BLOB, SLAB):
        pixels = np.stack([m == cls for m in masks]).astype(np.uint8)
        kept = sum(cv2.morphologyEx(p, cv2.MORPH_OPEN, WIDER_THAN_3PX).sum() for p in pixels)
        share = kept / pixels.sum()
        name = SCENES_CLASSES[cls]
        # Crossings of two strokes may hold a 4x4 square; nothing else in a stroke does.
        if cls in THIN_CLASSES:
            assert share < 0.05, f"{name}: {share:.1%} of it is wider than 3 px"
        else:
            assert share > 0.8, f"{name}: {share:.1%} of it is wider than 3 px"


def test_thin_classes_weigh_in_the_mean_iou() -> None:
    # The mean IoU averages classes, not pixels: half of the object classes are strokes.
    assert len(THIN_CLASSES) / (NUM_CLASSES - 1) == 0.5


def test_objects_occlude_each_other_in_depth_order() -> None:
    hidden_in_part = 0
    for seed in range(4):
        layers = scene_layers(np.random.default_rng(seed), SIZE)
        mask = label_map(layers, SIZE)
        in_front = np.zeros((SIZE, SIZE), dtype=bool)  # pixels of objects nearer the eye
        for cls, obj in reversed(layers):
            assert (mask[obj & ~in_front] == cls).all()  # what nothing hides shows
            hidden_in_part += bool((obj & in_front).any() and (obj & ~in_front).any())
            in_front |= obj
    assert hidden_in_part >= 4  # about 4 per scene


def test_render_masks_are_the_layers_label_map() -> None:
    _, mask = render_scenes_sample(np.random.default_rng(7), 96)
    assert (mask == label_map(scene_layers(np.random.default_rng(7), 96), 96)).all()


def test_object_sizes_span_from_specks_to_half_the_image(masks: list[np.ndarray]) -> None:
    speck_widths = []
    for mask in masks:
        _, _, stats, _ = cv2.connectedComponentsWithStats((mask == SPECK).astype(np.uint8))
        speck_widths += list(stats[1:, cv2.CC_STAT_WIDTH])  # row 0 is the rest
    assert min(speck_widths) <= 5
    largest = max(int(obj.sum()) for seed in range(6)
                  for cls, obj in scene_layers(np.random.default_rng(seed), SIZE)
                  if cls in (BLOB, SLAB))
    assert largest > (SIZE / 4) ** 2  # a blob or slab over a quarter of the image wide


def test_config_names_the_classes_and_the_generator() -> None:
    dataset = _compose().dataset
    assert dataset.num_classes == NUM_CLASSES
    assert list(dataset.class_names) == list(SCENES_CLASSES)
    assert dataset.root == "data/scenes"
    assert "scripts/make_scenes.py" in dataset.setup_command


def test_seg_train_runs_on_scenes(tiny: Path, tmp_path: Path) -> None:
    cfg = _compose("debug=tiny", f"dataset.root={tiny}", "dataset.crop_size=48")
    item = training_split(cfg.dataset)[0]
    assert tuple(item["image"].shape) == (3, 48, 48)
    assert set(item["mask"].unique().tolist()) <= set(range(NUM_CLASSES)) | {255}  # 255: padding
    train(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["per_class_iou"]) <= set(SCENES_CLASSES)
