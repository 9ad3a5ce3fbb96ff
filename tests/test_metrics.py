"""Metrics against values computed by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from seg.engine.metrics import ConfusionMatrix, RegionMetrics, dilate, erode, format_table


def test_metrics_match_hand_computed_values() -> None:
    # 3 classes; class 2 is absent from both truth and prediction; 255 is ignored.
    target = torch.tensor([[0, 0, 0, 1], [1, 1, 255, 255]])
    prediction = torch.tensor([[0, 0, 1, 1], [1, 0, 2, 0]])
    cm = ConfusionMatrix(num_classes=3)
    cm.update(prediction, target)
    assert cm.matrix.tolist() == [[2, 1, 0], [1, 2, 0], [0, 0, 0]]
    m = RegionMetrics(cm).compute()
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
    m = RegionMetrics(cm).compute()
    # class 0: tp 1, union 2 -> 0.5; class 1: 1.0; class 2: tp 0, union 1 -> 0.
    assert m["per_class_iou"] == pytest.approx([0.5, 1.0, 0.0])
    assert m["mIoU"] == pytest.approx(0.5)
    assert m["mean_acc"] == pytest.approx((0.5 + 1.0) / 2)  # class 2 has no true pixels


def test_accumulates_over_batches_not_averaged_per_batch() -> None:
    cm = ConfusionMatrix(num_classes=2)
    cm.update(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 0, 1]))
    cm.update(torch.tensor([1]), torch.tensor([1]))
    # one matrix over all pixels: class 1 tp 1, union 2 -> 0.5; class 0 tp 3, union 4
    assert RegionMetrics(cm).compute()["per_class_iou"] == pytest.approx([0.75, 0.5])


def test_out_of_range_label_is_an_error() -> None:
    cm = ConfusionMatrix(num_classes=2)
    cm.update(torch.tensor([0, 0, 1]), torch.tensor([5, 255, 7]))  # counted, not raised: no sync
    with pytest.raises(ValueError, match=r"2 pixel\(s\) have labels out of range for 2 classes "
                                         r"\(largest 7"):
        RegionMetrics(cm).compute()


def test_table_names_classes() -> None:
    cm = ConfusionMatrix(num_classes=2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    table = format_table(RegionMetrics(cm).compute(), ["background", "disk"])
    assert "background" in table and "disk" in table and "100.00" in table


def square(size: int, rows: slice, cols: slice, label: int = 1) -> torch.Tensor:
    labels = torch.zeros(1, size, size, dtype=torch.long)
    labels[0, rows, cols] = label
    return labels


def test_boundary_metrics_are_one_for_a_perfect_prediction() -> None:
    from seg.engine.metrics import BoundaryMetrics

    target = square(8, slice(2, 6), slice(1, 5))
    metrics = BoundaryMetrics(num_classes=2, tolerance=2)
    metrics.update(target.clone(), target)
    result = metrics.compute()
    assert result["boundary_f"] == 1.0 and result["boundary_iou"] == 1.0


def test_boundary_f_tolerates_shifts_within_the_band() -> None:
    from seg.engine.metrics import BoundaryMetrics

    target = square(10, slice(3, 7), slice(2, 6))
    shifted = square(10, slice(3, 7), slice(3, 7))
    within, exact = BoundaryMetrics(2, tolerance=1), BoundaryMetrics(2, tolerance=0)
    within.update(shifted, target)
    exact.update(shifted, target)
    assert within.compute()["per_class_boundary_f"][1] == 1.0
    # tolerance 0: the 12-pixel contours share the 6 pixels of rows 3 and 6, cols 3-5
    assert exact.compute()["per_class_boundary_f"][1] == pytest.approx(0.5)


def test_boundary_iou_matches_hand_count() -> None:
    from seg.engine.metrics import BoundaryMetrics

    # True 4x4 square at rows/cols 1-4 of a 6x6 image; the prediction is shifted right by
    # one, against the image's right edge (which is not a contour). Bands of width 1:
    # true band 12 pixels, predicted band 10 (rows 1 and 4, plus column 2), 6 in common.
    target = square(6, slice(1, 5), slice(1, 5))
    prediction = square(6, slice(1, 5), slice(2, 6))
    metrics = BoundaryMetrics(2, tolerance=1)
    metrics.update(prediction, target)
    assert metrics.compute()["per_class_boundary_iou"][1] == pytest.approx(6 / 16)


def test_boundary_of_a_missed_class_scores_zero_and_absent_classes_are_left_out() -> None:
    from seg.engine.metrics import BoundaryMetrics

    target = square(8, slice(2, 6), slice(2, 6))
    metrics = BoundaryMetrics(3, tolerance=2)
    metrics.update(torch.zeros_like(target), target)
    result = metrics.compute()
    assert result["per_class_boundary_f"][1] == 0.0
    assert math.isnan(result["per_class_boundary_f"][2])  # class 2 nowhere


def test_ignored_pixels_make_no_boundary() -> None:
    from seg.engine.metrics import BoundaryMetrics

    target = square(8, slice(0, 8), slice(4, 8), label=255)  # right half ignored
    metrics = BoundaryMetrics(2, tolerance=1)
    metrics.update(torch.zeros_like(target), target)
    assert metrics.counts.sum() == 0


def test_checkerboard_score_by_hand() -> None:
    from seg.engine.metrics import PhaseConfidence

    flat = PhaseConfidence(stride=2)
    flat.update(torch.full((1, 3, 4, 6), 1 / 3))
    assert flat.compute()["checkerboard"] == pytest.approx(0.0)
    # top-class probability 0.9 at phase (0, 0) and 0.5 elsewhere:
    # phase means [0.9, 0.5, 0.5, 0.5] -> std 0.1732 / mean 0.6
    probabilities = torch.full((1, 2, 4, 6), 0.5)
    probabilities[:, 0, ::2, ::2], probabilities[:, 1, ::2, ::2] = 0.9, 0.1
    patterned = PhaseConfidence(stride=2)
    patterned.update(probabilities)
    assert patterned.compute()["checkerboard"] == pytest.approx(0.03**0.5 / 0.6)


@pytest.mark.parametrize("radius", [1, 2, 4])
def test_dilation_and_erosion_match_max_pooling(radius: int) -> None:
    """The shifted-OR morphology equals the textbook one: max-pooling a square."""
    torch.manual_seed(radius)
    masks = torch.rand(3, 2, 17, 9) > 0.85
    size = 2 * radius + 1

    def pooled(m: torch.Tensor) -> torch.Tensor:
        grown = F.max_pool2d(m.float().flatten(0, 1).unsqueeze(1), size, stride=1,
                             padding=radius)
        return grown.view(m.shape) > 0

    assert torch.equal(dilate(masks, radius), pooled(masks))
    assert torch.equal(erode(masks, radius), ~pooled(~masks))
    thin = torch.zeros(1, 1, 5, dtype=torch.bool)  # a 1-pixel-high image
    thin[0, 0, 2] = True
    assert dilate(thin, radius).tolist() == [[[i - 2 in range(-radius, radius + 1)
                                               for i in range(5)]]]
