"""Segmentation metrics from one confusion matrix accumulated over a whole split.

Pixel accuracy, mean accuracy, mean IoU and frequency-weighted IoU are the four
of the FCN paper. Classes absent from both ground truth and prediction have
undefined IoU and accuracy: they are left out of the means, never counted as 0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class ConfusionMatrix:
    """``matrix[t, p]`` counts pixels of true class ``t`` predicted as ``p``."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: str = "cpu") -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted and true label maps (any matching shapes)."""
        keep = target != self.ignore_index
        target, prediction = target[keep], prediction[keep]
        if target.numel() and int(target.max()) >= self.num_classes:
            raise ValueError(
                f"label {int(target.max())} is out of range for {self.num_classes} classes "
                f"(valid: 0..{self.num_classes - 1} and {self.ignore_index} for ignore)"
            )
        k = self.num_classes
        index = target.to(self.matrix.device) * k + prediction.to(self.matrix.device)
        self.matrix += torch.bincount(index, minlength=k * k).view(k, k)

    def reset(self) -> None:
        self.matrix.zero_()

    def compute(self) -> dict[str, float | list[float]]:
        """The FCN paper's four metrics plus per-class IoU and accuracy (NaN if undefined)."""
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
    """A plain-text table: one row per class (IoU, accuracy), then the means."""
    width = max(len(name) for name in [*class_names, "pixel accuracy"])
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'acc':>6}", "-" * (width + 16)]
    for name, iou, acc in zip(
        class_names, metrics["per_class_iou"], metrics["per_class_acc"], strict=True
    ):
        lines.append(f"{name:<{width}}  {_percent(iou)}  {_percent(acc)}")
    lines.append("-" * (width + 16))
    for label, key in [("mIoU", "mIoU"), ("mean accuracy", "mean_acc"),
                       ("pixel accuracy", "pixel_acc"), ("fw IoU", "fw_iou")]:
        lines.append(f"{label:<{width}}  {_percent(metrics[key])}")
    return "\n".join(lines)


def _percent(value: float) -> str:
    return f"{'n/a':>6}" if value != value else f"{100 * value:6.2f}"
