import pytest
import torch
import torch.nn.functional as F

from seg.data.labels import IGNORE_INDEX
from seg.engine.losses import SegmentationLoss, soft_dice_loss
from seg.errors import BadValue


def one_hot_dice_loss(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The textbook form, with one-hot maps, to check the indexed one against."""
    labelled = (targets != IGNORE_INDEX).unsqueeze(1)
    one_hot = F.one_hot(targets.clamp(max=probs.shape[1] - 1), probs.shape[1])
    one_hot = one_hot.permute(0, 3, 1, 2) * labelled
    probs = probs * labelled
    intersection = (probs * one_hot).sum((0, 2, 3))
    totals = probs.sum((0, 2, 3)) + one_hot.sum((0, 2, 3))
    present = one_hot.sum((0, 2, 3)) > 0
    return 1 - ((2 * intersection + 1) / (totals + 1))[present].mean()


def test_soft_dice_matches_the_one_hot_form_and_skips_ignored_pixels() -> None:
    torch.manual_seed(0)
    probs = torch.randn(2, 5, 9, 7).softmax(1)
    targets = torch.randint(0, 4, (2, 9, 7))  # class 4 never appears
    targets[0, :3] = IGNORE_INDEX
    expected = one_hot_dice_loss(probs, targets)
    assert torch.allclose(soft_dice_loss(probs, targets), expected)
    # what ignored pixels predict changes nothing
    shuffled = probs.clone()
    shuffled[0, :, :3] = shuffled[0, :, :3].flip(0)
    assert torch.allclose(soft_dice_loss(shuffled, targets), expected)


def test_soft_dice_is_near_zero_for_a_perfect_prediction_and_one_for_a_wrong_one() -> None:
    targets = torch.randint(0, 3, (2, 16, 16))
    perfect = F.one_hot(targets, 3).permute(0, 3, 1, 2).float()
    assert soft_dice_loss(perfect, targets) < 0.01
    wrong = F.one_hot((targets + 1) % 3, 3).permute(0, 3, 1, 2).float()
    assert soft_dice_loss(wrong, targets) > 0.99


def test_every_ignored_pixel_gives_a_zero_loss_with_a_gradient() -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    targets = torch.full((1, 4, 4), IGNORE_INDEX)
    loss = soft_dice_loss(logits.softmax(1), targets)
    loss.backward()
    assert loss.item() == 0 and logits.grad is not None


def test_segmentation_loss_adds_weighted_dice_to_cross_entropy() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    targets = torch.randint(0, 4, (2, 8, 8))
    targets[1, 0] = IGNORE_INDEX
    ce = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    assert torch.equal(SegmentationLoss()(logits, targets), ce)
    dice = soft_dice_loss(logits.softmax(1), targets)
    assert torch.allclose(SegmentationLoss(dice_weight=2.0)(logits, targets), ce + 2 * dice)
    SegmentationLoss(dice_weight=1.0)(logits.bfloat16(), targets).backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("weight", [-1, "high", None])
def test_a_bad_dice_weight_names_its_key(weight: object) -> None:
    with pytest.raises(BadValue, match="loss.dice_weight"):
        SegmentationLoss(dice_weight=weight)
