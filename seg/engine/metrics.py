"""Segmentation metrics of a whole split, and the protocol every metric follows.

Pixel accuracy, mean accuracy, mean IoU and frequency-weighted IoU are the four
of the FCN paper, all from one confusion matrix accumulated over the split. Classes absent
from both ground truth and prediction have undefined IoU and accuracy: they are left out
of the means, never counted as 0 or 1.

A metric is one class (:class:`Metric`): it says what it reports and how each value is
shown, how it counts a batch and what is summed over processes, and registers itself in
:data:`METRICS`. The evaluation, metrics.json, TensorBoard, the console table and the
study's tables all read the registry, so a new metric is one class and nothing else.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from seg.data.labels import IGNORE_INDEX
from seg.errors import BadValue
from seg.text import Lines, printable

# bincount is about twice as fast as index_add_ on the CPU (0.4 against 0.7 ms for a batch
# of 8 crops of 128 px, one thread); on a GPU it reads its input's maximum back to the host
BINCOUNT_ON_CPU = True


def bin_counts(index: torch.Tensor, size: int) -> torch.Tensor:
    """How many of ``index`` (int64, each below ``size``) fall in each of ``size`` bins."""
    if index.device.type == "cpu" and BINCOUNT_ON_CPU:
        return torch.bincount(index, minlength=size)
    bins = torch.zeros(size, dtype=torch.int64, device=index.device)
    return bins.index_add_(0, index, torch.ones_like(index))


class ConfusionMatrix:
    """``matrix[t, p]`` counts pixels of true class ``t`` predicted as ``p``.

    It lives on ``device`` and never waits for it: out-of-range labels are counted there
    and reported by :meth:`check_labels`, not checked batch by batch (each check would stall
    a GPU until its queued work is done)."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 device: str | torch.device = "cpu") -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.out_of_range = torch.zeros((), dtype=torch.int64, device=device)
        self.largest_label = torch.zeros((), dtype=torch.int64, device=device)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted and true label maps (any matching shapes)."""
        k, device = self.num_classes, self.matrix.device
        target, prediction = target.to(device).flatten(), prediction.to(device).flatten()
        if not target.numel():
            return
        counted = target != self.ignore_index
        in_range = (target >= 0) & (target < k)
        self.out_of_range += (counted & ~in_range).sum()
        self.largest_label = torch.maximum(self.largest_label,
                                           torch.where(counted, target, 0).max())
        # one bin per (true, predicted) pair and a last one for pixels that count nowhere
        index = torch.where(counted & in_range, target * k + prediction, k * k)
        self.matrix += bin_counts(index, k * k + 1)[:-1].view(k, k)

    def check_labels(self) -> None:
        """Raise if any label was neither a class nor ``ignore_index``."""
        if int(self.out_of_range):
            raise BadValue(
                f"{int(self.out_of_range)} pixel(s) have labels out of range for "
                f"{self.num_classes} classes (largest {int(self.largest_label)}; valid: "
                f"0..{self.num_classes - 1} and {self.ignore_index} for ignore)"
            )

    def counts(self) -> torch.Tensor:
        """The matrix as float64 on the host, its labels checked (:meth:`check_labels`):
        what the metrics derived from it compute from."""
        self.check_labels()
        return self.matrix.double().cpu()


# -- the protocol ----------------------------------------------------------------------------

LAST = math.inf  # a place after every built-in metric's: where a new metric's values go


@dataclass(frozen=True)
class Scalar:
    """One number a metric reports, and how it is shown.

    ``key``: its key in metrics.json and its TensorBoard tag ``val/<key>``; ``label``: its
    row of the console table (:func:`format_table`); ``title``: its column in the study's
    summary (compare.md, summary.csv); ``scale`` and ``form``: how it is written in both
    (100 and ``.2f``: a ratio in percent). Its places in the study, lower first, ties in
    registry order, None where it is left out: ``summary``, among the summary's columns;
    ``csv``, among compare.csv's; ``paired``, among the metrics compared between runs of
    the same seed (in percentage points), which every metrics.json the study reads must
    then hold."""

    key: str
    label: str
    title: str
    scale: int = 100
    form: str = ".2f"
    summary: float | None = LAST
    csv: float | None = LAST
    paired: float | None = None


StudyPlace = Literal["summary", "csv", "paired"]


@dataclass(frozen=True)
class PerClass:
    """Values a metric reports per class: a list in class order, NaN where undefined.

    ``key`` (``per_class_*``): its key in metrics.json, where the list becomes ``{class
    name: value}``; ``column``: its column title in the console table (None: not shown
    there), its values written as ``scale`` and ``form`` say."""

    key: str
    column: str | None = None
    scale: int = 100
    form: str = ".2f"


@dataclass(frozen=True)
class EvaluationSetup:
    """What each metric of one evaluation is built with. ``confusion``: the evaluation's one
    confusion matrix, counted by the evaluator and summed over processes before any metric
    computes; metrics derived from it read it (:meth:`ConfusionMatrix.counts`) rather
    than count pixels again."""

    confusion: ConfusionMatrix
    boundary_tolerance: int | None = None  # pixels; None: each batch's (boundary_tolerance)
    output_stride: int = 1  # the model's: the coarse grid its output may show

    @property
    def num_classes(self) -> int:
        return self.confusion.num_classes

    @property
    def ignore_index(self) -> int:
        return self.confusion.ignore_index

    @property
    def device(self) -> torch.device:
        return self.confusion.matrix.device


@dataclass(frozen=True)
class EvaluatedBatch:
    """One batch as the metrics see it, on the evaluation device."""

    scores: torch.Tensor  # (B, K, H, W) fp32 class scores
    predictions: torch.Tensor  # (B, H, W) each pixel's top class
    targets: torch.Tensor  # (B, H, W) true labels, the setup's ignore_index where uncounted


class Metric(ABC):
    """A metric of a whole split: what every registered metric (:data:`METRICS`) is.

    A subclass declares what it reports (``scalars``, ``per_class``: keys and how each is
    shown). Each evaluation builds it (:meth:`for_evaluation`), hands it every batch
    (:meth:`add`), sums its :meth:`totals` over all processes in its one collective, then
    takes :meth:`compute`; metrics.json, TensorBoard, the console table and the study's
    tables follow from the declaration."""

    scalars: ClassVar[tuple[Scalar, ...]] = ()
    per_class: ClassVar[tuple[PerClass, ...]] = ()

    @classmethod
    @abstractmethod
    def for_evaluation(cls, setup: EvaluationSetup) -> Metric:
        """This metric with nothing counted yet, for one evaluation."""

    def add(self, batch: EvaluatedBatch) -> None:
        """Count one batch, on the device, never reading a value back to the host (each
        read waits for the device's queued work). Metrics derived from the confusion matrix
        keep this: the evaluator counts it."""
        return

    def totals(self) -> list[torch.Tensor]:
        """What is summed over all processes, in place, before :meth:`compute`: counts and
        sums on the evaluation device."""
        return []

    @abstractmethod
    def compute(self) -> dict[str, float | list[float]]:
        """The value over the split of each key of ``scalars`` and ``per_class``."""

    @classmethod
    def reported(cls) -> list[str]:
        """The keys of its ``scalars`` and ``per_class``."""
        return [value.key for value in (*cls.scalars, *cls.per_class)]


class MetricRegistry:
    """The metrics every evaluation reports, in the order they were registered: the order
    of metrics.json's keys, of the console table's rows and columns, and of the study's
    columns where their places tie."""

    def __init__(self) -> None:
        self.metrics: list[type[Metric]] = []

    def register(self, metric: type[Metric]) -> type[Metric]:
        """Class decorator: every evaluation from now on reports ``metric``."""
        keys = [key for known in {*self.metrics, metric} for key in known.reported()]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice or metric in self.metrics:
            raise ValueError(f"metric {metric.__name__}: {', '.join(twice) or 'it'} is "
                             "registered twice")
        unnamed = [value.key for value in metric.per_class
                   if not value.key.startswith("per_class_")]
        if unnamed:
            raise ValueError(f"metric {metric.__name__}: per-class key {unnamed[0]!r} must "
                             "start with per_class_ (metrics.json names its classes)")
        self.metrics.append(metric)
        return metric

    def unregister(self, metric: type[Metric]) -> None:
        self.metrics.remove(metric)

    def scalars(self) -> list[Scalar]:
        return [scalar for metric in self.metrics for scalar in metric.scalars]

    def scalar_keys(self) -> list[str]:
        """Every scalar's key (TensorBoard logs each as ``val/<key>``)."""
        return [scalar.key for scalar in self.scalars()]

    def per_class(self) -> list[PerClass]:
        return [values for metric in self.metrics for values in metric.per_class]

    def placed(self, place: StudyPlace) -> list[Scalar]:
        """The scalars the study shows at ``place`` (see :class:`Scalar`), in their order."""
        shown = [scalar for scalar in self.scalars() if getattr(scalar, place) is not None]
        return sorted(shown, key=lambda scalar: getattr(scalar, place))

    def for_evaluation(self, setup: EvaluationSetup) -> list[Metric]:
        return [metric.for_evaluation(setup) for metric in self.metrics]


METRICS = MetricRegistry()


def compute_all(metrics: Sequence[Metric]) -> dict[str, float | list[float]]:
    """Every metric's values, in registry order; a metric whose :meth:`Metric.compute`
    does not give exactly the keys it declares is an error here, not a missing column
    later."""
    values: dict[str, float | list[float]] = {}
    for metric in metrics:
        computed = metric.compute()
        if sorted(computed) != sorted(metric.reported()):
            raise TypeError(f"{type(metric).__name__}.compute() gave {sorted(computed)}, "
                            f"but it declares {sorted(metric.reported())}")
        values.update(computed)
    return values


# -- the metrics -----------------------------------------------------------------------------


@METRICS.register
class RegionMetrics(Metric):
    """The FCN paper's four metrics from the evaluation's confusion matrix, with IoU and
    accuracy per class (NaN where undefined)."""

    scalars = (Scalar("mIoU", "mIoU", "mIoU %", summary=0, csv=0, paired=0),
               Scalar("mean_acc", "mean accuracy", "mean acc %", summary=None, csv=2),
               Scalar("pixel_acc", "pixel accuracy", "pixel acc %", summary=2, csv=1),
               Scalar("fw_iou", "fw IoU", "fw IoU %", summary=None, csv=None))
    per_class = (PerClass("per_class_iou", "IoU"), PerClass("per_class_acc", "acc"))

    def __init__(self, confusion: ConfusionMatrix) -> None:
        self.confusion = confusion

    @classmethod
    def for_evaluation(cls, setup: EvaluationSetup) -> RegionMetrics:
        return cls(setup.confusion)

    def compute(self) -> dict[str, float | list[float]]:
        m = self.confusion.counts()
        true_positive = m.diag()
        per_true = m.sum(1)  # pixels of each true class
        per_pred = m.sum(0)  # pixels predicted as each class
        union = per_true + per_pred - true_positive
        total = m.sum()
        iou = true_positive / union  # NaN where the class is absent from both
        accuracy = true_positive / per_true  # NaN where the class is absent from truth
        frequency = per_true / total
        present = per_true > 0
        return {
            "pixel_acc": float(true_positive.sum() / total),
            "mean_acc": float(accuracy.nanmean()),
            "mIoU": float(iou.nanmean()),
            "fw_iou": float((frequency[present] * iou[present]).sum()),
            "per_class_iou": iou.tolist(),
            "per_class_acc": accuracy.tolist(),
        }


def format_table(metrics: dict, class_names: Sequence[str]) -> str:
    """A plain-text table: one row per class with the per-class values the registered
    metrics put in columns (IoU, accuracy, boundary F), then every scalar, each written as
    its metric says; what ``metrics`` lacks is left out. Class names are escaped
    (:func:`seg.text.printable`): they come from data, and this table reaches terminals
    and train.log."""
    class_names = [printable(name) for name in class_names]
    columns = [values for values in METRICS.per_class()
               if values.column is not None and values.key in metrics]
    width = max(len(name) for name in [*class_names, *(s.label for s in METRICS.scalars())])
    rule = "-" * (width + 8 * len(columns))
    header = f"{'class':<{width}}" + "".join(f"  {values.column:>6}" for values in columns)
    lines = [header, rule]
    for row, name in enumerate(class_names):
        lines.append(f"{name:<{width}}" + "".join(
            f"  {_cell(metrics[values.key][row], values.scale, values.form)}"
            for values in columns))
    lines.append(rule)
    lines += [f"{scalar.label:<{width}}  {_cell(metrics[scalar.key], scalar.scale, scalar.form)}"
              for scalar in METRICS.scalars() if scalar.key in metrics]
    return Lines("\n".join(lines))


def _cell(value: float, scale: int, form: str) -> str:
    return f"{'n/a':>6}" if value != value else f"{scale * value:6{form}}"


def erode(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary erosion of ``(..., H, W)`` bool masks by a ``(2r+1)^2`` square. Outside the
    image counts as inside the mask, so the image frame is never a boundary."""
    return ~dilate(~masks, radius)


def dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of ``(..., H, W)`` bool masks by a ``(2r+1)^2`` square.

    A square is a row then a column, and each is an OR of shifted copies: bool work,
    many times faster than max-pooling float masks on CPUs.
    """
    grown = masks.clone()
    for axis in (-2, -1):
        source = grown.clone()
        length = masks.shape[axis]
        for shift in range(1, min(radius, length - 1) + 1):
            grown.narrow(axis, shift, length - shift).logical_or_(
                source.narrow(axis, 0, length - shift))
            grown.narrow(axis, 0, length - shift).logical_or_(
                source.narrow(axis, shift, length - shift))
    return grown


# DAVIS's boundary tolerance (Perazzi et al. 2016, davis2017-evaluation's f_measure): a
# share of the image diagonal
BOUNDARY_TOLERANCE_SHARE = 0.008


def boundary_tolerance(height: int, width: int) -> int:
    """The boundary metrics' tolerance in pixels for ``height`` x ``width`` images:
    0.8 % of their diagonal, as DAVIS's, rounded to the nearest pixel (DAVIS rounds up,
    which would keep 2 px down to 89 px images), at least 1. 1 px up to about 132 px
    images, 2 px for shapes' and scenes' 192 px val images, 6 px at 512 px."""
    return max(1, round(BOUNDARY_TOLERANCE_SHARE * math.hypot(height, width)))


def count_per_class(masks: torch.Tensor) -> torch.Tensor:
    """True pixels of ``(B, c, H, W)`` bool masks per class, ``(c,)``. Summed as bytes
    into int32, exact up to 2**31 pixels per class and batch: on CPUs twice as fast as
    summing the stacked bools, which widens them to int64."""
    return masks.view(torch.uint8).sum((0, 2, 3), dtype=torch.int32)


@METRICS.register
class BoundaryMetrics(Metric):
    """Boundary F-score and boundary IoU per class, accumulated over a whole split.

    Boundary F (Csurka et al. 2013): precision is the share of predicted boundary pixels
    within ``tolerance`` pixels of a true boundary pixel, recall the converse; F is their
    harmonic mean. Boundary IoU (Cheng et al. 2021): the IoU of the parts of the true and
    predicted masks that lie within ``tolerance`` pixels of their own contours. Distances
    are chessboard distances; ignored pixels and the image's frame make no boundary.

    ``tolerance=None`` (an evaluation's default) scales it with the images: each batch's
    :func:`boundary_tolerance`, 0.8 % of its diagonal, at least 1 px. A fixed 2 px
    (chessboard: 2.8 px diagonally) passed every error of that size, which on 96 px images
    can be every error a good model makes: F read 100 for every class while boundary IoU
    read 68. A class with a true boundary never predicted scores 0, and so does one
    predicted where the split's truth has no boundary of it (as its IoU is 0).
    """

    scalars = (Scalar("boundary_f", "boundary F", "boundary F %", summary=1, csv=3, paired=1),
               Scalar("boundary_iou", "boundary IoU", "boundary IoU %", summary=None, csv=4))
    per_class = (PerClass("per_class_boundary_f", "bnd F"), PerClass("per_class_boundary_iou"))

    def __init__(self, num_classes: int, tolerance: int | None = None,
                 ignore_index: int = IGNORE_INDEX, device: str | torch.device = "cpu") -> None:
        self.num_classes = num_classes
        self.tolerance = tolerance
        self.ignore_index = ignore_index
        # per class: matched predicted, predicted, matched true, true boundary pixels;
        # then boundary-band intersection and union
        self.counts = torch.zeros(6, num_classes, dtype=torch.float64, device=device)

    @classmethod
    def for_evaluation(cls, setup: EvaluationSetup) -> BoundaryMetrics:
        return cls(setup.num_classes, setup.boundary_tolerance, setup.ignore_index, setup.device)

    def add(self, batch: EvaluatedBatch) -> None:
        self.update(batch.predictions, batch.targets)

    def totals(self) -> list[torch.Tensor]:
        return [self.counts]

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of ``(B, H, W)`` predicted and true label maps."""
        tolerance = self.tolerance if self.tolerance is not None \
            else boundary_tolerance(*target.shape[-2:])
        valid = (target != self.ignore_index).unsqueeze(1)  # (B, 1, H, W)
        # Classes are done together, in chunks that keep the masks near 16 M pixels.
        chunk = max(1, (1 << 24) // max(target.numel(), 1))
        for first in range(0, self.num_classes, chunk):
            classes = torch.arange(first, min(first + chunk, self.num_classes),
                                   device=target.device).view(1, -1, 1, 1)
            true = target.unsqueeze(1) == classes  # (B, c, H, W)
            pred = (prediction.unsqueeze(1) == classes) & valid
            true_edge = true & ~erode(true | ~valid, 1)
            pred_edge = pred & ~erode(pred | ~valid, 1)
            near_true = dilate(true_edge, tolerance)
            near_pred = dilate(pred_edge, tolerance)
            true_band = true & ~erode(true | ~valid, tolerance)
            pred_band = pred & ~erode(pred | ~valid, tolerance)
            counts = torch.stack([count_per_class(mask) for mask in (
                pred_edge & near_true, pred_edge, true_edge & near_pred, true_edge,
                true_band & pred_band, true_band | pred_band)])  # (6, c)
            self.counts[:, first:first + classes.numel()] += counts.to(self.counts)

    def compute(self) -> dict[str, float | list[float]]:
        matched_pred, pred, matched_true, true, intersection, union = self.counts.cpu()
        precision = matched_pred / pred
        recall = matched_true / true
        f_score = 2 * precision * recall / (precision + recall)
        # a class with a true boundary never predicted, or a predicted boundary where the
        # truth has none, scores 0; only a class with neither is undefined (NaN)
        f_score = torch.where((true > 0) | (pred > 0), f_score.nan_to_num(0.0), f_score)
        boundary_iou = intersection / union
        return {
            "boundary_f": float(f_score.nanmean()),
            "boundary_iou": float(boundary_iou.nanmean()),
            "per_class_boundary_f": f_score.tolist(),
            "per_class_boundary_iou": boundary_iou.tolist(),
        }


@METRICS.register
class PhaseConfidence(Metric):
    """Checkerboard score: how much the mean confidence of the output depends on the
    pixel's phase ``(y mod s, x mod s)`` relative to the decoder's stride ``s``.

    It is the standard deviation of the ``s x s`` phase means of the top-class
    probability divided by their mean, over a whole split: 0 for an output that does
    not care where the coarse grid falls; checkerboard artifacts raise it. In an
    evaluation, pixels labelled ``ignore_index`` are left out.
    """

    scalars = (Scalar("checkerboard", "checkerboard", "checkerboard", scale=1, form=".4f",
                      summary=3, csv=5),)

    def __init__(self, stride: int, device: str | torch.device = "cpu",
                 ignore_index: int = IGNORE_INDEX) -> None:
        self.stride = stride
        self.ignore_index = ignore_index
        self.sums = torch.zeros(stride, stride, dtype=torch.float64, device=device)
        self.counts = torch.zeros(stride, stride, dtype=torch.float64, device=device)

    @classmethod
    def for_evaluation(cls, setup: EvaluationSetup) -> PhaseConfidence:
        return cls(setup.output_stride, setup.device, setup.ignore_index)

    def add(self, batch: EvaluatedBatch) -> None:
        self.update(batch.scores.softmax(1), batch.targets != self.ignore_index)

    def totals(self) -> list[torch.Tensor]:
        return [self.sums, self.counts]

    def update(self, probabilities: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Add ``(B, K, H, W)`` class probabilities; ``valid`` masks out padding."""
        confidence = probabilities.max(1).values  # (B, H, W)
        weight = torch.ones_like(confidence) if valid is None else valid.to(confidence.dtype)
        s = self.stride
        height, width = confidence.shape[-2:]
        pad = (0, (-width) % s, 0, (-height) % s)
        confidence = F.pad(confidence * weight, pad)
        weight = F.pad(weight, pad)
        # (B, H/s, s, W/s, s) -> sum over everything but the two phase axes
        shape = (confidence.shape[0], confidence.shape[1] // s, s, confidence.shape[2] // s, s)
        self.sums += confidence.reshape(shape).sum((0, 1, 3)).to(self.sums)
        self.counts += weight.reshape(shape).sum((0, 1, 3)).to(self.counts)

    def compute(self) -> dict[str, float]:
        means = (self.sums / self.counts).cpu()
        return {"checkerboard": float(means.std(unbiased=False) / means.mean())}
