"""seg-eval's pictures of its errors: the worst val images by per-image mIoU as panels
(image | ground truth | prediction), the confusion matrix as a picture and a CSV, and the
rule every output of seg-eval follows (an earlier one is kept unless overwrite=true)."""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seg.cli.eval import evaluate_checkpoint
from seg.confusion_picture import CELL, label_band
from seg.data.decoding import read_image
from seg.trained.checkpoint import dataset_from_stored, load_trained, model_from_checkpoint
from seg.trained.error_analysis import WorstImages, per_image_miou
from tests.test_use import compose_config

PANEL = re.compile(r"(\d+)_(.+)_miou-(\d+\.\d)\.png")
IMAGE_SIZE, VAL_IMAGES, CLASSES = 64, 4, 8  # the tiny shapes dataset of tests/conftest.py


def eval_config(checkpoint: Path, *overrides: str):
    return compose_config("eval", f"checkpoint={checkpoint}", "device=cpu", "progress=false",
                          *overrides)


def miou_of(truth: np.ndarray, prediction: np.ndarray, num_classes: int) -> float:
    """The definition, written out: ignored (255) pixels left out; the mean IoU over the
    classes found in the ground truth or the prediction of the pixels that count."""
    counted = truth != 255
    truth, prediction = truth[counted], prediction[counted]
    ious = []
    for c in range(num_classes):
        union = np.sum((truth == c) | (prediction == c))
        if union:
            ious.append(np.sum((truth == c) & (prediction == c)) / union)
    return float(np.mean(ious)) if ious else math.nan


# -- per-image mIoU ------------------------------------------------------------------------


def test_per_image_miou_of_hand_made_masks() -> None:
    truth = torch.tensor([
        [[0, 0, 1], [1, 1, 255]],
        [[255, 255, 255], [255, 255, 255]],
        [[3, 3, 3], [3, 3, 3]],
        [[0, 0, 0], [0, 0, 0]],
    ])
    prediction = torch.tensor([
        # class 0: 1 hit, union 3 -> 1/3; class 1: 2 hits, union 4 -> 1/2; class 2 is
        # predicted only where the truth is ignored, so it is not present
        [[0, 1, 1], [1, 0, 2]],
        [[0, 1, 2], [3, 0, 1]],  # every pixel ignored: no mIoU
        [[3, 3, 3], [3, 3, 3]],  # right everywhere: 1
        [[1, 1, 1], [1, 1, 1]],  # wrong everywhere: classes 0 and 1 at IoU 0
    ])
    scores = per_image_miou(prediction, truth, num_classes=4)
    assert scores[0].item() == pytest.approx((1 / 3 + 1 / 2) / 2)  # 5/12
    assert math.isnan(scores[1].item())
    assert scores[2].item() == 1.0 and scores[3].item() == 0.0
    for image in (0, 2, 3):
        assert scores[image].item() == pytest.approx(
            miou_of(truth[image].numpy(), prediction[image].numpy(), 4))


def test_worst_images_keeps_the_lowest_of_all_batches() -> None:
    collector = WorstImages(count=2, num_classes=2)
    truth = torch.tensor([[[0, 1]], [[0, 1]], [[255, 255]]])
    collector(["right", "half", "ignored"], torch.tensor([[[0, 1]], [[0, 0]], [[1, 1]]]), truth)
    collector(["wrong", "half_too"], torch.tensor([[[1, 0]], [[0, 0]]]), truth[:2])
    worst = collector.worst()
    # "half" and "half_too" score 0.25 (class 0: 1/2, class 1: 0); of equals, by id
    assert [(c.sample_id, c.miou) for c in worst] == [("wrong", 0.0), ("half", 0.25)]
    assert worst[0].prediction.tolist() == [[1, 0]] and worst[0].prediction.dtype == np.uint8


# -- seg-eval's pictures -------------------------------------------------------------------


def palette_lookup(palette: list[list[int]], num_classes: int) -> dict[tuple, int]:
    colours = {tuple(colour): index for index, colour in enumerate(palette[:num_classes])}
    assert len(colours) == num_classes  # each class its own colour: a panel can be read back
    return colours


def labels_from_colours(pixels: np.ndarray, colours: dict[tuple, int]) -> np.ndarray:
    """A coloured mask read back to class indices; any other colour (ignored) is 255."""
    labels = np.full(pixels.shape[:2], 255, np.uint8)
    for colour, index in colours.items():
        labels[np.all(pixels == colour, axis=-1)] = index
    return labels


def independent_mious(checkpoint: Path) -> dict[str, float]:
    """Each val image's mIoU from the model run on it alone, outside seg-eval."""
    state = load_trained(checkpoint)
    model = model_from_checkpoint(state).eval()
    dataset = dataset_from_stored(state, "val")
    found = {}
    with torch.no_grad():
        for index in range(len(dataset)):
            item = dataset[index]
            prediction = model(item["image"][None]).max(1).indices[0].numpy()
            found[item["id"]] = miou_of(item["mask"].numpy(), prediction, CLASSES)
    return found


def test_seg_eval_draws_the_worst_images_and_the_confusion_matrix(
        checkpoint: Path, shapes_root: Path, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="seg.eval"):
        metrics = evaluate_checkpoint(eval_config(checkpoint, "worst=3", "batch_size=1"),
                                      tmp_path)
    assert f"pictures in {tmp_path}: confusion.png, confusion.csv, worst/" in caplog.text
    said = [record.getMessage() for record in caplog.records if record.name == "seg.eval"]
    assert said[-1] == f"wrote {tmp_path / 'eval.json'}"  # still the last line
    state = load_trained(checkpoint)
    colours = palette_lookup(state["palette"], CLASSES)
    panels = sorted((tmp_path / "worst").iterdir())
    assert len(panels) == 3
    values = []
    for place, path in enumerate(panels, 1):
        number, sample_id, miou = PANEL.fullmatch(path.name).groups()
        assert int(number) == place
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert pixels.shape[1] == 3 * IMAGE_SIZE  # image | ground truth | prediction
        image, truth, prediction = np.split(pixels[:IMAGE_SIZE], 3, axis=1)
        # the image as the user's file holds it: nothing normalised, nothing left to undo
        assert np.array_equal(image, read_image(shapes_root / "JPEGImages" / f"{sample_id}.jpg"))
        truth = labels_from_colours(truth, colours)
        assert np.array_equal(truth, np.asarray(Image.open(
            shapes_root / "SegmentationClass" / f"{sample_id}.png")))
        recomputed = miou_of(truth, labels_from_colours(prediction, colours), CLASSES)
        assert f"{100 * recomputed:.1f}" == miou
        values.append(recomputed)
    assert values == sorted(values)
    everyone = independent_mious(checkpoint)
    worst_three = sorted(everyone, key=lambda sample_id: (everyone[sample_id], sample_id))[:3]
    assert [PANEL.fullmatch(path.name).group(2) for path in panels] == worst_three
    counted = sum(int(np.sum(np.asarray(Image.open(mask)) != 255))
                  for mask in (shapes_root / "SegmentationClass").glob("*.png")
                  if mask.stem in everyone)
    check_confusion(tmp_path, state["class_names"], metrics["confusion_matrix"], counted)


def check_confusion(folder: Path, names: list[str], matrix: list[list[int]],
                    counted: int) -> None:
    with open(folder / "confusion.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0][1:] == names and [row[0] for row in rows[1:]] == names
    counts = np.array([[int(v) for v in row[1:]] for row in rows[1:]])
    assert counts.tolist() == matrix == json.loads(
        (folder / "eval.json").read_text())["confusion_matrix"]
    assert counts.sum() == counted  # the val split's pixels, but for the ignored ones
    picture = Image.open(folder / "confusion.png").convert("RGB")
    band = label_band(names)
    assert picture.size == (band + CLASSES * CELL, band + CLASSES * CELL)
    assert CELL >= 24
    pixels = np.asarray(picture)
    for row in range(CLASSES):
        for column in range(CLASSES):
            # a cell's corner, clear of the percentage written in its middle
            colour = pixels[band + row * CELL + 1, band + column * CELL + 1]
            total = counts[row].sum()
            if not total:
                assert tuple(colour) == (215, 215, 215)  # no ground-truth pixel
                continue
            share = counts[row, column] / total  # rows: ground truth, each summing to 1
            expected = np.rint(np.array([255, 255, 255]) * (1 - share)
                               + np.array([8, 48, 107]) * share)
            assert colour.tolist() == expected.tolist(), (row, column)


def test_worst_zero_draws_no_panels(checkpoint: Path, tmp_path: Path) -> None:
    evaluate_checkpoint(eval_config(checkpoint, "worst=0"), tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "confusion.csv", "confusion.png", "eval.json"]


def test_earlier_pictures_are_kept_unless_overwrite(checkpoint: Path, tmp_path: Path) -> None:
    evaluate_checkpoint(eval_config(checkpoint, "worst=3"), tmp_path)
    (tmp_path / "eval.json").unlink()  # the pictures alone still refuse a second evaluation
    earlier = (tmp_path / "confusion.png").read_bytes()
    with pytest.raises(FileExistsError, match="confusion.png holds an earlier evaluation: "
                                              "choose another output_dir, or overwrite=true"):
        evaluate_checkpoint(eval_config(checkpoint, "worst=0"), tmp_path)
    for name in ("confusion.png", "confusion.csv"):
        (tmp_path / name).unlink()
    with pytest.raises(FileExistsError, match="worst holds an earlier evaluation's panels"):
        evaluate_checkpoint(eval_config(checkpoint, "worst=3"), tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["worst"]
    (tmp_path / "worst" / "notes.txt").write_text("the user's")
    evaluate_checkpoint(eval_config(checkpoint, "worst=2", "overwrite=true"), tmp_path)
    kept = sorted(path.name for path in (tmp_path / "worst").iterdir())
    assert len(kept) == 3 and kept[-1] == "notes.txt"  # 2 new panels; no earlier one left
    assert [name[:3] for name in kept[:2]] == ["01_", "02_"]
    assert (tmp_path / "confusion.png").read_bytes() == earlier  # the same model and data


def test_worst_panels_never_go_through_a_link(checkpoint: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "worst").symlink_to(elsewhere)
    with pytest.raises(FileExistsError, match="worst is a link or a file, not a folder"):
        evaluate_checkpoint(eval_config(checkpoint, "overwrite=true"), out)
    assert list(elsewhere.iterdir()) == [] and sorted(p.name for p in out.iterdir()) == ["worst"]


@pytest.mark.parametrize("value", ["-1", "true", "2.5"])
def test_a_bad_worst_is_one_line(checkpoint: Path, tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError, match=f"worst={value.replace('true', 'True')}: use a "
                                         "whole number of images to draw, 0 for none"):
        evaluate_checkpoint(eval_config(checkpoint, f"worst={value}"), tmp_path)
    assert list(tmp_path.iterdir()) == []
