"""A new user's smaller reports (issue 40): boundary F on small images, resized colour
masks in ``seg-data check``, the ONNX file's input contract, and docs/REFERENCE.md's
tables against the config files."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seg.engine.metrics import BoundaryMetrics, EvaluationSetup, boundary_tolerance
from tests.layouts import FOLDER_COLORS, SIZE, make_folder

# -- boundary F on small images --------------------------------------------------------------


def square_at(top: int, left: int, side: int = 50, size: int = 96) -> torch.Tensor:
    """A ``(1, size, size)`` label map: class 1 in a ``side`` square at (top, left)."""
    labels = torch.zeros(1, size, size, dtype=torch.long)
    labels[0, top:top + side, left:left + side] = 1
    return labels


def square_boundary_f(shift: int, tolerance: int | None = None) -> float:
    """Boundary F of class 1 for the 50 px square at (20, 20) of a 96 px image predicted
    ``shift`` pixels to the right."""
    metrics = BoundaryMetrics(num_classes=2, tolerance=tolerance)
    metrics.update(square_at(20, 20 + shift), square_at(20, 20))
    return metrics.compute()["per_class_boundary_f"][1]


def test_boundary_tolerance_is_a_share_of_the_diagonal_and_at_least_one_pixel() -> None:
    # 0.8 % of the diagonal (DAVIS's share), to the nearest pixel: 96 px images 1.09 -> 1,
    # shapes' and scenes' 192 px val images 2.17 -> 2, 512 px 5.79 -> 6
    assert [boundary_tolerance(side, side) for side in (8, 96, 128, 192, 512)] == [1, 1, 1, 2, 6]
    assert boundary_tolerance(1024, 2048) == 18  # Cityscapes: 0.008 x 2289.7


def test_boundary_f_on_96px_images_is_one_only_within_the_tolerance() -> None:
    assert square_boundary_f(0) == 1.0  # a perfect prediction
    assert square_boundary_f(1) == 1.0  # 1 px off: within the 1 px of a 96 px image
    # 4 px off: only the top and bottom edges match (49 of each edge's 50 pixels...)
    assert square_boundary_f(4) < 0.6


def test_a_2px_error_on_a_96px_image_is_no_longer_hidden() -> None:
    # 2 px to the right, 1 px tolerance: of each 196-pixel contour, 49 pixels of the top
    # edge, 49 of the bottom and the 2 ends of one side are within 1 px of the other
    assert square_boundary_f(2) == pytest.approx(100 / 196)
    assert square_boundary_f(2, tolerance=2) == 1.0  # the fixed 2 px saw nothing wrong


def test_each_batch_gets_the_tolerance_of_its_own_size() -> None:
    # the same 2 px error on a 192 px image (tolerance 2) is within the tolerance
    metrics = BoundaryMetrics(num_classes=2)
    metrics.update(square_at(20, 22, size=192), square_at(20, 20, size=192))
    assert metrics.compute()["per_class_boundary_f"][1] == 1.0


def test_evaluations_scale_the_tolerance_unless_given_one() -> None:
    from seg.engine.metrics import ConfusionMatrix

    setup = EvaluationSetup(ConfusionMatrix(2))
    assert setup.boundary_tolerance is None
    assert BoundaryMetrics.for_evaluation(setup).tolerance is None
    fixed = EvaluationSetup(ConfusionMatrix(2), boundary_tolerance=3)
    assert BoundaryMetrics.for_evaluation(fixed).tolerance == 3


def test_a_class_predicted_but_absent_from_the_truth_scores_zero() -> None:
    # as its IoU does (RegionMetrics): its predicted boundary matches nothing
    target = square_at(20, 20)
    prediction = target.clone()
    prediction[0, 80:90, 80:90] = 2  # class 2 is nowhere in the truth
    metrics = BoundaryMetrics(num_classes=4)
    metrics.update(prediction, target)
    result = metrics.compute()
    assert result["per_class_boundary_f"][2] == 0.0
    assert math.isnan(result["per_class_boundary_f"][3])  # nowhere at all: left out
    assert result["boundary_f"] == pytest.approx((result["per_class_boundary_f"][0] + 1 + 0) / 3)


# -- seg-data check: a colour mask resized with interpolation ----------------------------------


def blocky_colour_mask(height: int, width: int) -> Image.Image:
    """An RGB mask in make_folder's colours: red and green rectangles on black, a white
    (ignored) corner."""
    mask = np.zeros((height, width, 3), np.uint8)
    mask[height // 8:height // 2, width // 8:width // 2] = FOLDER_COLORS[1]
    mask[height // 2:7 * height // 8, width // 3:7 * width // 8] = FOLDER_COLORS[2]
    mask[:height // 8, 7 * width // 8:] = 255
    return Image.fromarray(mask)


def test_blends_are_colours_between_two_listed_ones() -> None:
    from seg.data.check import blended_colours

    listed = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], float)
    colours = np.array([[128, 0, 0],  # black-red
                        [127, 128, 0],  # red-green, 0.4 off the line (rounding)
                        [0, 40, 0],  # black-green
                        [60, 60, 0],  # black, red and green at once: no two of them
                        [0, 0, 200],  # nowhere near
                        [255, 0, 0]], float)  # a listed colour is no blend
    assert blended_colours(colours, listed).tolist() == [True, True, True, False, False, False]


def test_check_says_once_that_bilinearly_resized_masks_look_resized(tmp_path: Path,
                                                                     capsys) -> None:
    from seg.cli.data import main as seg_data

    root = make_folder(tmp_path / "folder", rgb=True)
    height, width = SIZE
    resized = [root / "masks" / f"tile_00{n}.png" for n in (1, 2)]
    for path in resized:  # drawn at twice the size, then resized as a user might
        big = blocky_colour_mask(2 * height, 2 * width)
        big.resize((width, height), Image.Resampling.BILINEAR).save(path)
    assert seg_data(["check", "dataset=folder", f"dataset.root={root}",
                     "dataset.val_fraction=0", "dataset.num_workers=0"]) == 1
    lines = capsys.readouterr().out.splitlines()
    hints = [line for line in lines if "look resized with interpolation" in line]
    assert len(hints) == 1 and hints == [lines[-1]]
    assert hints[0].startswith("hint: 2 colour mask(s) look resized")
    assert all(str(path) in hints[0] for path in resized)
    assert "resize masks with nearest neighbour" in hints[0]
    assert sum("are not in classes.yaml" in line for line in lines) == 2  # still listed


def test_check_gives_no_resize_hint_for_a_few_odd_colours(tmp_path: Path, capsys) -> None:
    from seg.cli.data import main as seg_data

    root = make_folder(tmp_path / "folder", rgb=True)
    nearest = root / "masks" / "tile_001.png"  # resized right: no blends
    height, width = SIZE
    blocky_colour_mask(2 * height, 2 * width).resize(
        (width, height), Image.Resampling.NEAREST).save(nearest)
    odd = root / "masks" / "tile_002.png"  # a few colours of no class, between none
    rgb = np.array(Image.open(odd))
    rgb[0, :3] = [[1, 2, 200], [9, 200, 9], [200, 9, 90]]
    Image.fromarray(rgb).save(odd)
    assert seg_data(["check", "dataset=folder", f"dataset.root={root}",
                     "dataset.val_fraction=0", "dataset.num_workers=0"]) == 1
    out = capsys.readouterr().out
    assert f"{odd}: colours" in out and "look resized" not in out
    assert str(nearest) not in out


# -- the ONNX file's input contract ----------------------------------------------------------


def test_the_onnx_metadata_states_the_contract_the_graph_keeps(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from functools import partial

    from seg.models.decoder import DECODERS
    from seg.models.encoders import build_encoder
    from seg.models.model import build_model
    from seg.models.upsamplers import build_upsampler
    from seg.trained.onnx import checkpoint_metadata, export_onnx

    torch.manual_seed(0)
    mean, std = [0.3, 0.5, 0.7], [0.2, 0.25, 0.3]
    encoder = build_encoder("simple", stem_width=8, widths=[8, 16, 16, 16], depths=[1, 1, 1, 1])
    model = build_model(encoder, partial(DECODERS.build, "fcn8s"), 3,
                        partial(build_upsampler, name="bilinear"), mean=mean, std=std).eval()
    state = {"class_names": ["background", "crack", "moss"], "mean": mean, "std": std,
             "palette": FOLDER_COLORS}
    path = export_onnx(model, tmp_path / "model.onnx", metadata=checkpoint_metadata(state))
    metadata = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert metadata["mean"] == mean and metadata["std"] == std
    assert "RGB pixel values 0-255 as decoded, not normalised" in metadata["input"]
    assert "(images / 255 - mean) / std" in metadata["input"]
    assert "(batch, classes, height, width), the input's height and width" in metadata["output"]

    # what the words say, done by hand to the model without its own first step
    images = torch.randint(0, 256, (2, 3, 37, 53), generator=torch.Generator().manual_seed(1))
    images = images.float()
    normalised = (images / 255 - torch.tensor(mean).view(1, 3, 1, 1)) \
        / torch.tensor(std).view(1, 3, 1, 1)
    model.normalise = torch.nn.Identity()
    with torch.no_grad():
        expected = model(normalised).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": images.numpy()})
    assert logits.shape == (2, 3, 37, 53)
    assert np.abs(logits - expected).max() <= 1e-4


# -- docs/REFERENCE.md's tables against the config files --------------------------------------

ROOT = Path(__file__).resolve().parents[1]
# the groups whose row of the configuration table names nothing but their options (the
# others also name option keys, such as the decoders' `channels`)
OPTIONS_ONLY = {"dataset", "model/encoder", "inference", "optimizer", "experiment", "compare",
                "hparams_search", "debug", "callbacks", "scheduler", "trainer", "logger"}


def reference_section(title: str) -> str:
    text = (ROOT / "docs" / "REFERENCE.md").read_text()
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(section: str) -> list[list[str]]:
    """The cells of each row of the section's tables, header and rule left out."""
    lines = section.splitlines()
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line, after in zip(lines, [*lines[1:], ""], strict=True)
            if line.startswith("| `") and not after.startswith("|---")]


def names_in(cell: str) -> set[str]:
    """The backquoted plain names of a cell (not keys such as `dataset.root`)."""
    return {name for name in re.findall(r"`([^`]+)`", cell) if re.fullmatch(r"[a-z0-9_]+", name)}


def config_options(group: str) -> set[str]:
    return {path.stem for path in (ROOT / "configs" / group).glob("*.yaml")}


def test_the_configuration_table_lists_every_option_of_every_group() -> None:
    listed: dict[str, set[str]] = {}
    for groups, options in table_rows(reference_section("Configuration")):
        names = sorted(re.findall(r"`([^`]+)`", groups))
        for group in names:
            listed[group] = names_in(options) if len(names) == 1 else \
                names_in(options) & config_options(group)
        assert set().union(*(config_options(group) for group in names)) <= names_in(options), \
            f"docs/REFERENCE.md's row of {', '.join(names)} misses an option"
    groups = {str(path.parent.relative_to(ROOT / "configs"))
              for path in (ROOT / "configs").glob("**/*.yaml")
              if path.parent != ROOT / "configs" and "hydra" not in path.parts}
    assert groups <= set(listed), f"groups missing from the table: {groups - set(listed)}"
    for group in OPTIONS_ONLY:
        assert listed[group] <= config_options(group), \
            f"docs/REFERENCE.md names {group} options with no config file: " \
            f"{listed[group] - config_options(group)}"
    assert {"timm", "efficientnet_lite0"} <= listed["model/encoder"]
    assert {"full", "imagenet", "scratch", "practice", "mydata"} <= listed["compare"]


def dataset_config(name: str):
    from hydra import compose, initialize_config_module

    from seg.cli.command import CONFIG_MODULE

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name="train", overrides=[f"dataset={name}"]).dataset


def documented_recipe(recipe: str) -> tuple[object, list[float], int | None]:
    """crop_size, scale_range and base_size as a recipe cell of the datasets table says."""
    crop = re.search(r"(\d+)(?: x (\d+))? crop", recipe)
    crop_size: object = "auto" if "crop `auto`" in recipe else \
        [int(crop[1]), int(crop[2])] if crop[2] else int(crop[1])
    low, high = re.search(r"(?:scale|x) ([\d.]+)-([\d.]+)", recipe).groups()
    base = re.search(r"short side (\d+)", recipe)
    return crop_size, [float(low), float(high)], int(base[1]) if base else None


def test_the_datasets_table_gives_each_config_its_crop_and_scales() -> None:
    rows = {cells[0].strip("`"): cells[-1]
            for cells in table_rows(reference_section("Datasets")) if len(cells) == 4}
    assert set(rows) == config_options("dataset")
    for name, recipe in rows.items():
        as_other = re.fullmatch(r"as `(\w+)`", recipe)
        crop_size, scale_range, base_size = documented_recipe(
            rows[as_other[1]] if as_other else recipe)
        data = dataset_config(name)
        crop = data.crop_size if isinstance(data.crop_size, (int, str)) else list(data.crop_size)
        assert (crop, list(data.scale_range), data.base_size) == \
            (crop_size, scale_range, base_size), f"dataset={name}: {recipe}"


def test_the_augmentation_table_gives_the_shared_defaults() -> None:
    from omegaconf import OmegaConf

    shared = OmegaConf.load(ROOT / "configs" / "dataset_base.yaml")
    rows = {cells[0].strip("`"): cells[1]
            for cells in table_rows(reference_section("Datasets")) if len(cells) == 3}
    assert {"dataset.rotation", "dataset.hflip", "dataset.blur"} <= set(rows)
    for key, default in rows.items():
        value = float(re.match(r"`([\d.]+)`", default)[1])
        assert float(shared[key.removeprefix("dataset.")]) == value, key
