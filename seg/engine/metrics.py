"""Segmentation metrics from one confusion matrix accumulated over a whole split.

Pixel accuracy, mean accuracy, mean IoU and frequency-weighted IoU are the four
of the FCN paper. Classes absent from both ground truth and prediction have
undefined IoU and accuracy: they are left out of the means, never counted as 0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from seg.data.base import IGNORE_INDEX
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
    and reported by :meth:`compute`, not checked batch by batch (each check would stall
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

    def compute(self) -> dict[str, float | list[float]]:
        """The FCN paper's four metrics plus per-class IoU and accuracy (NaN if undefined)."""
        self.check_labels()
        m = self.matrix.double().cpu()
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
    """A plain-text table: one row per class (IoU, accuracy, boundary F when present),
    then the means. Class names are escaped (:func:`seg.text.printable`): they come
    from data, and this table reaches terminals and train.log."""
    class_names = [printable(name) for name in class_names]
    columns = [("IoU", "per_class_iou"), ("acc", "per_class_acc")]
    if "per_class_boundary_f" in metrics:
        columns.append(("bnd F", "per_class_boundary_f"))
    width = max(len(name) for name in [*class_names, "pixel accuracy"])
    rule = "-" * (width + 8 * len(columns))
    header = f"{'class':<{width}}" + "".join(f"  {title:>6}" for title, _ in columns)
    lines = [header, rule]
    for row, name in enumerate(class_names):
        lines.append(f"{name:<{width}}" + "".join(f"  {_percent(metrics[key][row])}"
                                                 for _, key in columns))
    lines.append(rule)
    for label, key in [("mIoU", "mIoU"), ("mean accuracy", "mean_acc"),
                       ("pixel accuracy", "pixel_acc"), ("fw IoU", "fw_iou"),
                       ("boundary F", "boundary_f"), ("boundary IoU", "boundary_iou")]:
        if key in metrics:
            lines.append(f"{label:<{width}}  {_percent(metrics[key])}")
    if "checkerboard" in metrics:
        lines.append(f"{'checkerboard':<{width}}  {metrics['checkerboard']:6.4f}")
    return Lines("\n".join(lines))


def _percent(value: float) -> str:
    return f"{'n/a':>6}" if value != value else f"{100 * value:6.2f}"


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


def count_per_class(masks: torch.Tensor) -> torch.Tensor:
    """True pixels of ``(B, c, H, W)`` bool masks per class, ``(c,)``. Summed as bytes
    into int32, exact up to 2**31 pixels per class and batch: on CPUs twice as fast as
    summing the stacked bools, which widens them to int64."""
    return masks.view(torch.uint8).sum((0, 2, 3), dtype=torch.int32)


class BoundaryMetrics:
    """Boundary F-score and boundary IoU per class, accumulated over a whole split.

    Boundary F (Csurka et al. 2013): precision is the share of predicted boundary pixels
    within ``tolerance`` pixels of a true boundary pixel, recall the converse; F is their
    harmonic mean. Boundary IoU (Cheng et al. 2021): the IoU of the parts of the true and
    predicted masks that lie within ``tolerance`` pixels of their own contours. Distances
    are chessboard distances, computed by max-pooling; ignored pixels count nowhere.
    """

    def __init__(self, num_classes: int, tolerance: int = 2, ignore_index: int = IGNORE_INDEX,
                 device: str | torch.device = "cpu") -> None:
        self.num_classes = num_classes
        self.tolerance = tolerance
        self.ignore_index = ignore_index
        # per class: matched predicted, predicted, matched true, true boundary pixels;
        # then boundary-band intersection and union
        self.counts = torch.zeros(6, num_classes, dtype=torch.float64, device=device)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of ``(B, H, W)`` predicted and true label maps."""
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
            near_true = dilate(true_edge, self.tolerance)
            near_pred = dilate(pred_edge, self.tolerance)
            true_band = true & ~erode(true | ~valid, self.tolerance)
            pred_band = pred & ~erode(pred | ~valid, self.tolerance)
            counts = torch.stack([count_per_class(mask) for mask in (
                pred_edge & near_true, pred_edge, true_edge & near_pred, true_edge,
                true_band & pred_band, true_band | pred_band)])  # (6, c)
            self.counts[:, first:first + classes.numel()] += counts.to(self.counts)

    def compute(self) -> dict[str, float | list[float]]:
        matched_pred, pred, matched_true, true, intersection, union = self.counts.cpu()
        precision = matched_pred / pred
        recall = matched_true / true
        f_score = 2 * precision * recall / (precision + recall)
        # a class with a true boundary that was never predicted scores 0, not NaN
        f_score = torch.where(true > 0, f_score.nan_to_num(0.0), f_score)
        boundary_iou = intersection / union
        return {
            "boundary_f": float(f_score.nanmean()),
            "boundary_iou": float(boundary_iou.nanmean()),
            "per_class_boundary_f": f_score.tolist(),
            "per_class_boundary_iou": boundary_iou.tolist(),
        }


class PhaseConfidence:
    """Checkerboard score: how much the mean confidence of the output depends on the
    pixel's phase ``(y mod s, x mod s)`` relative to the decoder's stride ``s``.

    It is the standard deviation of the ``s x s`` phase means of the top-class
    probability divided by their mean, over a whole split: 0 for an output that does
    not care where the coarse grid falls; checkerboard artifacts raise it.
    """

    def __init__(self, stride: int, device: str | torch.device = "cpu") -> None:
        self.stride = stride
        self.sums = torch.zeros(stride, stride, dtype=torch.float64, device=device)
        self.counts = torch.zeros(stride, stride, dtype=torch.float64, device=device)

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

    def compute(self) -> float:
        means = (self.sums / self.counts).cpu()
        return float(means.std(unbiased=False) / means.mean())
