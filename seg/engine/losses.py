"""Training losses: per-pixel cross-entropy, optionally plus a soft Dice loss.

Cross-entropy is averaged over pixels, so a class of few pixels (a thin line, a dot)
weighs little, while mIoU weighs every class alike. The Dice loss is averaged over
classes instead, as mIoU is; mmsegmentation's ``DiceLoss`` next to its
``CrossEntropyLoss`` is the same pairing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seg.catalogue import Catalogue
from seg.data.labels import IGNORE_INDEX
from seg.settings import number_in


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                  ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Per-pixel cross-entropy of ``(B, K, H, W)`` logits; ``ignore_index`` pixels count nowhere."""
    return F.cross_entropy(logits, targets, ignore_index=ignore_index)


def soft_dice_loss(probs: torch.Tensor, targets: torch.Tensor,
                   ignore_index: int = IGNORE_INDEX, smooth: float = 1.0) -> torch.Tensor:
    """``1 - `` the mean soft Dice coefficient of the classes present in ``targets``.

    For class ``c`` over the batch's labelled pixels: ``(2 sum(p_c y_c) + smooth) /
    (sum(p_c) + sum(y_c) + smooth)``, with ``p`` the ``(B, K, H, W)`` probabilities and
    ``y`` the one-hot labels. Classes absent from the batch are left out of the mean:
    their only Dice would be "predict none of it", which cross-entropy already asks.
    """
    num_classes = probs.shape[1]
    labelled = targets != ignore_index
    probs = probs * labelled.unsqueeze(1)  # ignored pixels predict nothing
    # Per-class sums by class index, without a one-hot map or boolean indexing (both slow
    # on CPU); ignored pixels go to class 0, with p_y 0 and weight 0.
    classes = targets.masked_fill(~labelled, 0).flatten()
    picked = probs.gather(1, classes.view_as(targets).unsqueeze(1)).flatten()  # p_y
    intersection = probs.new_zeros(num_classes).index_add(0, classes, picked)
    label_counts = probs.new_zeros(num_classes).index_add(
        0, classes, labelled.flatten().to(probs.dtype))
    predicted = probs.sum((0, 2, 3))
    dice = (2 * intersection + smooth) / (predicted + label_counts + smooth)
    # The mean over present classes as a weighted sum: no host sync on a GPU, and 0 when
    # every pixel is ignored
    present = (label_counts > 0).to(probs.dtype)
    return ((1 - dice) * present).sum() / present.sum().clamp(min=1)


LOSSES = Catalogue("loss")


@LOSSES.register("ce_dice")
@LOSSES.register("ce", dice_weight=0.0)
class SegmentationLoss(nn.Module):
    """``cross_entropy + dice_weight * soft_dice_loss``, computed in float32 whatever the
    logits' precision. ``dice_weight`` 0 is plain cross-entropy."""

    def __init__(self, dice_weight: float = 0.0) -> None:
        super().__init__()
        self.dice_weight = number_in(dice_weight, "loss.dice_weight", 0.0, float("inf"))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
        if not self.dice_weight:
            return cross_entropy(logits, targets, ignore_index)
        log_probs = logits.float().log_softmax(1)  # shared by both terms
        ce = F.nll_loss(log_probs, targets, ignore_index=ignore_index)
        return ce + self.dice_weight * soft_dice_loss(log_probs.exp(), targets, ignore_index)

    def extra_repr(self) -> str:
        return f"dice_weight={self.dice_weight}"
