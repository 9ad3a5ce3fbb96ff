"""The metric protocol: a metric is one class, registered in seg.engine.metrics.METRICS;
the evaluation, the console table, TensorBoard and the study's tables all follow it."""

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from seg.engine.checkpoints import RunInfo
from seg.engine.evaluation import evaluate
from seg.engine.hooks import TensorBoardScalars
from seg.engine.metrics import (
    METRICS,
    EvaluatedBatch,
    EvaluationSetup,
    Metric,
    PerClass,
    Scalar,
    bin_counts,
    compute_all,
    format_table,
)
from seg.engine.tensorboard import NullLogger
from seg.errors import BadValue
from seg.study.report import csv_metrics, final_section
from seg.study.runs import optional_metrics, read_metrics, required_metrics
from seg.study.stats import paired_metrics, summarize, summary_metrics

IGNORED = 255


class PredictedShare(Metric):
    """Toy metric: the share of counted pixels predicted as each class, and as any class
    but the first. Counted on the device, summed over processes like any other."""

    scalars = (Scalar("toy_coverage", "toy coverage", "toy coverage %"),)
    per_class = (PerClass("per_class_toy_share", "share"),)

    def __init__(self, num_classes: int, ignore_index: int, device: torch.device) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.counts = torch.zeros(num_classes, dtype=torch.int64, device=device)

    @classmethod
    def for_evaluation(cls, setup: EvaluationSetup) -> "PredictedShare":
        return cls(setup.num_classes, setup.ignore_index, setup.device)

    def add(self, batch: EvaluatedBatch) -> None:
        k = self.num_classes  # a last bin for ignored pixels, dropped
        index = torch.where(batch.targets != self.ignore_index, batch.predictions, k)
        self.counts += bin_counts(index.flatten(), k + 1)[:k]

    def totals(self) -> list[torch.Tensor]:
        return [self.counts]

    def compute(self) -> dict[str, float | list[float]]:
        share = self.counts.double() / self.counts.sum()
        return {"toy_coverage": float(share[1:].sum()), "per_class_toy_share": share.tolist()}


@contextmanager
def registered(metric: type[Metric]) -> Iterator[None]:
    METRICS.register(metric)
    try:
        yield
    finally:
        METRICS.unregister(metric)


def two_images() -> list[dict]:
    """Two 4x4 images whose three channels are the one-hot scores of their prediction:
    the first predicts class 1 on its top row (one target pixel ignored), the second
    class 2 on its left half. Counted: 31 pixels, 19 predicted 0, 4 predicted 1, 8 as 2."""
    first, second = torch.zeros(4, 4, dtype=torch.long), torch.zeros(4, 4, dtype=torch.long)
    first[0], second[:, :2] = 1, 2
    first_mask = torch.zeros(4, 4, dtype=torch.long)
    first_mask[3, 3] = IGNORED
    return [{"image": nn.functional.one_hot(prediction, 3).permute(2, 0, 1).float(),
             "mask": mask} for prediction, mask in ((first, first_mask),
                                                    (second, torch.zeros_like(second)))]


class RecordedScalars(NullLogger):
    def __init__(self) -> None:
        self.scalars: dict[str, float] = {}

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        self.scalars.update(values)


def test_a_registered_metric_reaches_every_view(tmp_path: Path) -> None:
    names = ["background", "top", "left"]
    with registered(PredictedShare):
        metrics, shown = evaluate(nn.Identity(), DataLoader(two_images(), batch_size=1), 3,
                                  torch.device("cpu"), IGNORED)
        # the evaluation: counted over both batches, after the built-in metrics
        assert metrics["toy_coverage"] == pytest.approx(12 / 31)
        assert metrics["per_class_toy_share"] == pytest.approx([19 / 31, 4 / 31, 8 / 31])
        keys = list(metrics)
        assert keys.index("checkerboard") < keys.index("toy_coverage") < keys.index(
            "inference_ms_per_image")
        # the console table: its row and its per-class column, in percent
        table = format_table(metrics, names).splitlines()
        assert table[0].split()[-1] == "share" and table[2].split()[-1] == "61.29"
        assert table[-1].split() == ["toy", "coverage", "38.71"]
        # TensorBoard
        logger = RecordedScalars()
        info = RunInfo(names, [[0, 0, 0]] * 3, [0.0] * 3, [1.0] * 3)
        TensorBoardScalars(logger, info, log_every=1).after_evaluation(1, metrics, shown)
        assert logger.scalars["eval_metrics/toy_coverage"] == pytest.approx(12 / 31)
        # the study: read from metrics.json, averaged over seeds, a summary column
        assert "toy_coverage" in optional_metrics() and "toy_coverage" in csv_metrics()
        (tmp_path / "metrics.json").write_text(json.dumps({"mIoU": 0.5, "boundary_f": 0.5,
                                                           "toy_coverage": "most"}))
        with pytest.raises(BadValue, match="toy_coverage must be a number or null"):
            read_metrics(tmp_path / "metrics.json")
        runs = [{"decoder": "fcn8s", "upsampler": "bilinear", "seed": seed, "mIoU": 0.5,
                 "boundary_f": 0.5, "toy_coverage": value}
                for seed, value in ((0, 0.25), (1, 0.35))]
        header, _, row = final_section(summarize(runs), [])[4:7]
        assert header.split(" | ")[7] == "toy coverage %"
        assert row.split(" | ")[7] == "30.00 ± 7.07"
    assert "toy_coverage" not in METRICS.scalar_keys() + csv_metrics() + [*summary_metrics()]
    assert "share" not in format_table(metrics, names)


def test_the_built_in_metrics_show_as_before() -> None:
    """What each view listed before the protocol, in its order."""
    assert METRICS.scalar_keys() == ["mIoU", "mean_acc", "pixel_acc", "fw_iou", "boundary_f",
                                     "boundary_iou", "checkerboard"]
    assert summary_metrics() == {
        "mIoU": ("mIoU %", 100, ".2f"), "boundary_f": ("boundary F %", 100, ".2f"),
        "pixel_acc": ("pixel acc %", 100, ".2f"), "checkerboard": ("checkerboard", 1, ".4f"),
        "upsampler_params": ("upsampler params", 1, ".0f"),
        "train_images_per_s": ("train img/s", 1, ".1f"),
        "inference_ms_per_image": ("inference ms/img", 1, ".2f")}
    assert list(summary_metrics()) == ["mIoU", "boundary_f", "pixel_acc", "checkerboard",
                                       "upsampler_params", "train_images_per_s",
                                       "inference_ms_per_image"]
    assert paired_metrics() == ["mIoU", "boundary_f"] == list(required_metrics())
    assert csv_metrics() == ["mIoU", "pixel_acc", "mean_acc", "boundary_f", "boundary_iou",
                             "checkerboard"]
    assert sorted(optional_metrics()) == sorted(
        ["pixel_acc", "mean_acc", "fw_iou", "boundary_iou", "checkerboard",
         "upsampler_params", "train_images_per_s", "inference_ms_per_image"])


def test_the_console_table_is_as_before() -> None:
    metrics = {"pixel_acc": 0.84725, "mean_acc": 0.125, "mIoU": 0.105906, "fw_iou": 0.7177,
               "per_class_iou": [0.8472, math.nan, 0.0], "per_class_acc": [1.0, math.nan, 0.0],
               "boundary_f": 0.0, "boundary_iou": 0.01234,
               "per_class_boundary_f": [0.5, math.nan, 0.25],
               "per_class_boundary_iou": [0.1, 0.2, 0.3], "checkerboard": 0.000712,
               "inference_ms_per_image": 3.0}
    assert format_table(metrics, ["background", "a very long class name", "x"]) == (
        "class                      IoU     acc   bnd F\n"
        "----------------------------------------------\n"
        "background               84.72  100.00   50.00\n"
        "a very long class name     n/a     n/a     n/a\n"
        "x                         0.00    0.00   25.00\n"
        "----------------------------------------------\n"
        "mIoU                     10.59\n"
        "mean accuracy            12.50\n"
        "pixel accuracy           84.72\n"
        "fw IoU                   71.77\n"
        "boundary F                0.00\n"
        "boundary IoU              1.23\n"
        "checkerboard            0.0007")


def test_a_metric_must_say_its_own_keys() -> None:
    class Clash(PredictedShare):
        scalars = (Scalar("mIoU", "again", "again"),)

    class Unnamed(PredictedShare):
        per_class = (PerClass("toy_share"),)

    with pytest.raises(ValueError, match="Clash: mIoU is registered twice"):
        METRICS.register(Clash)
    with pytest.raises(ValueError, match="'toy_share' must start with per_class_"):
        METRICS.register(Unnamed)
    assert Clash not in METRICS.metrics and Unnamed not in METRICS.metrics

    class Forgetful(PredictedShare):
        def compute(self) -> dict[str, float | list[float]]:
            return {"toy_coverage": 0.0}

    forgetful = Forgetful(3, IGNORED, torch.device("cpu"))
    with pytest.raises(TypeError, match="declares"):
        compute_all([forgetful])
