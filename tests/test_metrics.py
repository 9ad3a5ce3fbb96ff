"""Metrics against values computed by hand."""

import math

import pytest
import torch

from seg.metrics import ConfusionMatrix, format_table


def test_metrics_match_hand_computed_values() -> None:
    # 3 classes; class 2 is absent from both truth and prediction; 255 is ignored.
    target = torch.tensor([[0, 0, 0, 1], [1, 1, 255, 255]])
    prediction = torch.tensor([[0, 0, 1, 1], [1, 0, 2, 0]])
    cm = ConfusionMatrix(num_classes=3)
    cm.update(prediction, target)
    assert cm.matrix.tolist() == [[2, 1, 0], [1, 2, 0], [0, 0, 0]]
    m = cm.compute()
    assert m["pixel_acc"] == pytest.approx(4 / 6)
    # class 0: tp 2, gt 3, pred 3 -> IoU 2/4, acc 2/3; class 1 likewise.
    assert m["per_class_iou"][:2] == pytest.approx([0.5, 0.5])
    assert math.isnan(m["per_class_iou"][2]) and math.isnan(m["per_class_acc"][2])
    assert m["mIoU"] == pytest.approx(0.5)  # absent class left out, not counted as 0 or 1
    assert m["mean_acc"] == pytest.approx(2 / 3)
    assert m["fw_iou"] == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)


def test_class_predicted_but_absent_from_truth_counts_as_zero() -> None:
    cm = ConfusionMatrix(num_classes=3)
    cm.update(torch.tensor([0, 2, 1, 1]), torch.tensor([0, 0, 1, 1]))
    m = cm.compute()
    # class 0: tp 1, union 2 -> 0.5; class 1: 1.0; class 2: tp 0, union 1 -> 0.
    assert m["per_class_iou"] == pytest.approx([0.5, 1.0, 0.0])
    assert m["mIoU"] == pytest.approx(0.5)
    assert m["mean_acc"] == pytest.approx((0.5 + 1.0) / 2)  # class 2 has no true pixels


def test_accumulates_over_batches_not_averaged_per_batch() -> None:
    cm = ConfusionMatrix(num_classes=2)
    cm.update(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 0, 1]))
    cm.update(torch.tensor([1]), torch.tensor([1]))
    # one matrix over all pixels: class 1 tp 1, union 2 -> 0.5; class 0 tp 3, union 4
    assert cm.compute()["per_class_iou"] == pytest.approx([0.75, 0.5])


def test_out_of_range_label_is_an_error() -> None:
    cm = ConfusionMatrix(num_classes=2)
    with pytest.raises(ValueError, match="label 5 is out of range"):
        cm.update(torch.tensor([0]), torch.tensor([5]))


def test_table_names_classes() -> None:
    cm = ConfusionMatrix(num_classes=2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    table = format_table(cm.compute(), ["background", "disk"])
    assert "background" in table and "disk" in table and "100.00" in table
