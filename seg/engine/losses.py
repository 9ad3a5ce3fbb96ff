"""Training losses: per-pixel cross-entropy, optionally plus a soft Dice loss, and three
answers to class imbalance: the focal loss, the Lovász-softmax loss and OHEM.

Cross-entropy is averaged over pixels, so a class of few pixels (a thin line, a dot)
weighs little, while mIoU weighs every class alike. The Dice loss is averaged over
classes instead, as mIoU is; mmsegmentation's ``DiceLoss`` next to its
``CrossEntropyLoss`` is the same pairing. The losses built on cross-entropy (``ce``,
``ce_dice``, ``focal``, ``ohem``) also take per-class weights (``class_weights``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seg.catalogue import Catalogue
from seg.data.labels import IGNORE_INDEX
from seg.errors import BadValue
from seg.settings import is_number, number_in


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                  ignore_index: int = IGNORE_INDEX, weight: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Per-pixel cross-entropy of ``(B, K, H, W)`` logits; ``ignore_index`` pixels count
    nowhere. With class ``weight`` (float32), torch's weighted mean, in float32."""
    if weight is not None:  # float32 weights take float32 logits, whatever the autocast
        logits = logits.float()
    return F.cross_entropy(logits, targets, weight=weight, ignore_index=ignore_index)


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


def labelled_log_probs(logits: torch.Tensor, targets: torch.Tensor,
                       labelled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p_y, y)``, each ``(B, H, W)``: the float32 log-probability of each pixel's
    class, and that class; unlabelled pixels read class 0, for the caller to weigh 0."""
    classes = targets.masked_fill(~labelled, 0)
    log_probs = logits.float().log_softmax(1).gather(1, classes.unsqueeze(1)).squeeze(1)
    return log_probs, classes


def weighted_mean(terms: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(weights * terms) / sum(weights)``, 0 (with a gradient) where the weights sum
    to 0: a batch with no labelled pixel, which then neither trains nor stops the run."""
    total = weights.sum()
    return (terms * weights).sum() / torch.where(total > 0, total, torch.ones_like(total))


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX,
               gamma: float = 2.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Lin et al.'s (2017) focal loss of ``(B, K, H, W)`` logits: the mean over labelled
    pixels of ``-alpha_y (1 - p_y)^gamma log p_y``, in float32. The factor ``(1 - p_y)^gamma``
    makes the many pixels already right (the large classes' insides) weigh little; gamma 0
    is cross-entropy. ``weight``: per-class ``alpha`` (else 1), a factor on each pixel's
    term as in the paper, the mean still over pixels (weighted cross-entropy's is over the
    weights)."""
    labelled = targets != ignore_index
    log_p, classes = labelled_log_probs(logits, targets, labelled)
    # 1 - p_y as -expm1(log p_y), exact near p_y = 1; kept above 0, so that a gamma below 1
    # has a finite gradient where p_y rounds to 1
    misses = (-torch.expm1(log_p)).clamp(min=torch.finfo(torch.float32).tiny)
    terms = -misses.pow(gamma) * log_p
    if weight is not None:
        terms = terms * weight[classes]
    return weighted_mean(terms, labelled.float())


def lovasz_steps(fg_sorted: torch.Tensor) -> torch.Tensor:
    """The gradient of the Lovász extension of the Jaccard loss for errors sorted in
    decreasing order, along the last axis of ``fg_sorted`` (1 where the pixel is of the
    class): step ``i``'s change of the Jaccard loss ``1 - I_i / U_i`` of the ``i`` largest
    errors (Berman et al. 2018, Alg. 1). In closed form rather than as the difference of
    successive Jaccard losses (the reference code's): over millions of pixels those
    differ by ~1e-7, below float32's resolution at 0.5. A pixel of the class lowers the
    intersection ``I`` by one (step ``1 / U_i``), any other raises the union ``U`` by one
    (step ``I_i / (U_i (U_i - 1))``)."""
    fg = fg_sorted.bool()
    seen_fg = fg.cumsum(-1, dtype=torch.int32)  # exact counts, whatever the pixel count
    seen = torch.arange(1, fg.shape[-1] + 1, device=fg.device, dtype=torch.int32)
    class_pixels = seen_fg[..., -1:]
    intersection = (class_pixels - seen_fg).float()
    union = (class_pixels + seen - seen_fg).float()  # >= 1
    # (U - 1) is 0 only for a class with no pixel, whose loss the caller leaves out
    other_step = intersection / (union * (union - 1).clamp(min=1))
    return torch.where(fg, 1 / union, other_step)


def lovasz_softmax(probs: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                   per_image: bool = False) -> torch.Tensor:
    """Berman et al.'s (2018) Lovász-softmax loss of ``(B, K, H, W)`` probabilities: for
    each class present, the Lovász extension of its Jaccard loss over the errors
    ``|y_c - p_c|``, averaged over those classes; over the whole batch's labelled pixels,
    or (``per_image``) per image and averaged over the images with labelled pixels.
    Ignored pixels get error 0 and no class: sorted last, they change no step that counts."""
    labelled = (targets != ignore_index).unsqueeze(1)  # (B, 1, H, W)
    classes = torch.arange(probs.shape[1], device=probs.device).view(1, -1, 1, 1)
    fg = (targets.unsqueeze(1) == classes) & labelled  # (B, K, H, W)
    errors = (fg.float() - probs.float()).abs() * labelled
    if per_image:  # G groups of pixels: the images, or the batch as one
        errors, fg = errors.flatten(2), fg.flatten(2)  # (G=B, K, H*W)
    else:
        errors, fg = (x.transpose(0, 1).flatten(1).unsqueeze(0)
                      for x in (errors, fg))  # (G=1, K, B*H*W)
    sorted_errors, order = errors.sort(-1, descending=True)
    losses = (sorted_errors * lovasz_steps(fg.gather(-1, order))).sum(-1)  # (G, K)
    present = fg.any(-1).float()  # (G, K)
    per_group = (losses * present).sum(-1) / present.sum(-1).clamp(min=1)  # (G,)
    return weighted_mean(per_group, present.amax(-1))


def hard_pixels(true_probs: torch.Tensor, labelled: torch.Tensor, thresh: float,
                min_kept: float) -> torch.Tensor:
    """Which labelled pixels OHEM keeps, by mmsegmentation's ``OHEMPixelSampler`` rule:
    those whose probability of their class is below ``max(thresh, p_(n))``, ``p_(n)`` the
    n-th lowest of the batch's (0-based, at most the last), ``n`` ``min_kept`` per image
    or, below 1, that fraction of the batch's labelled pixels: so at least ``n`` of the
    hardest whatever ``thresh``. As there, an ``n`` beyond the labelled pixels keeps all
    but the easiest."""
    candidates = true_probs[labelled]
    if candidates.numel() == 0:
        return labelled
    if min_kept < 1:
        wanted = int(min_kept * candidates.numel())
    else:
        wanted = int(min_kept) * true_probs.shape[0]
    nth = candidates.kthvalue(min(wanted, candidates.numel() - 1) + 1).values
    return labelled & (true_probs < nth.clamp(min=thresh))


def median_frequency_weights(pixel_counts: Sequence[int]) -> list[float]:
    """Class weights ``median(f) / f_c`` from each class's pixel count ``f_c``, the median
    over the classes present; 0 for a class with no pixel. Median-frequency balancing is
    SegNet's practice (Badrinarayanan et al. 2017, after Eigen and Fergus 2015): a class
    rarer than the median weighs more, a commoner one less, and the median class 1, so the
    loss keeps its scale (inverse frequencies would scale it with the pixel count). SegNet
    counts ``f_c`` over the images holding ``c``; this counts the whole split, as
    ``seg-data check`` does."""
    counts = np.asarray(pixel_counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        raise BadValue("loss.class_weights=auto: the training split has no labelled pixel")
    weights = np.zeros_like(counts)
    weights[present] = np.median(counts[present]) / counts[present]
    return weights.tolist()


def checked_class_weights(weights: object, num_classes: int | None = None) -> list[float] | None:
    """``loss.class_weights``: None, or one number ``>= 0`` per class (``num_classes`` of
    them, where known), not all 0. ``auto`` is seg-train's to work out, from the training
    split (seg.training.loss_from_config); a loss built directly takes the numbers."""
    if weights is None:
        return None
    if weights == "auto":
        raise BadValue("loss.class_weights=auto is worked out by seg-train from the training "
                       "split: a loss built directly takes a list of numbers, one per class")
    if (not isinstance(weights, list | tuple)
            or not all(is_number(w) and 0 <= w < float("inf") for w in weights)
            or not any(w > 0 for w in weights)):
        raise BadValue("loss.class_weights must be null, auto or a list of numbers >= 0, one "
                       f"per class, not all 0; got {weights!r}")
    if num_classes is not None and len(weights) != num_classes:
        raise BadValue(f"loss.class_weights has {len(weights)} values but the dataset has "
                       f"{num_classes} classes: give one per class, or auto")
    return [float(w) for w in weights]


def min_kept_setting(value: object) -> float:
    """``loss.min_kept``: a whole number of pixels per image (>= 1), or a fraction (0, 1)."""
    if not is_number(value) or not value > 0 or (value >= 1 and value != int(value)):
        raise BadValue("loss.min_kept must be a whole number of pixels per image (>= 1) or a "
                       f"fraction of the batch's labelled pixels (between 0 and 1), got {value!r}")
    return float(value)


LOSSES = Catalogue("loss")


class ClassWeightedLoss(nn.Module):
    """A loss with optional per-class weights, a float32 buffer that follows the logits to
    their device (the criterion is not moved with the model)."""

    def __init__(self, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        weights = checked_class_weights(class_weights)
        self.register_buffer("class_weights", None if weights is None else torch.tensor(weights),
                             persistent=False)

    def weight_on(self, device: torch.device) -> torch.Tensor | None:
        """The class weights on ``device`` (moved there once), or None."""
        if self.class_weights is not None and self.class_weights.device != device:
            self.class_weights = self.class_weights.to(device)
        return self.class_weights


@LOSSES.register("ce_dice")
@LOSSES.register("ce", dice_weight=0.0)
class SegmentationLoss(ClassWeightedLoss):
    """``cross_entropy + dice_weight * soft_dice_loss``, computed in float32 whatever the
    logits' precision. ``dice_weight`` 0 is plain cross-entropy. ``class_weights`` weigh
    the cross-entropy term only: the Dice term already weighs the classes alike."""

    def __init__(self, dice_weight: float = 0.0,
                 class_weights: Sequence[float] | None = None) -> None:
        super().__init__(class_weights)
        self.dice_weight = number_in(dice_weight, "loss.dice_weight", 0.0, float("inf"))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
        weight = self.weight_on(logits.device)
        if not self.dice_weight:
            return cross_entropy(logits, targets, ignore_index, weight)
        log_probs = logits.float().log_softmax(1)  # shared by both terms
        ce = F.nll_loss(log_probs, targets, weight=weight, ignore_index=ignore_index)
        return ce + self.dice_weight * soft_dice_loss(log_probs.exp(), targets, ignore_index)

    def extra_repr(self) -> str:
        return f"dice_weight={self.dice_weight}"


@LOSSES.register("focal")
class FocalLoss(ClassWeightedLoss):
    """:func:`focal_loss`, ``class_weights`` its per-class ``alpha``."""

    def __init__(self, gamma: float = 2.0, class_weights: Sequence[float] | None = None) -> None:
        super().__init__(class_weights)
        self.gamma = number_in(gamma, "loss.gamma", 0.0, float("inf"))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
        return focal_loss(logits, targets, ignore_index, self.gamma,
                          self.weight_on(logits.device))

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


@LOSSES.register("lovasz")
class LovaszSoftmaxLoss(nn.Module):
    """:func:`lovasz_softmax` of the logits' softmax, in float32: a surrogate of the
    Jaccard loss (1 - IoU) of each class, so it optimises what mIoU measures."""

    def __init__(self, per_image: bool = False) -> None:
        super().__init__()
        if not isinstance(per_image, bool):
            raise BadValue(f"loss.per_image must be true or false, got {per_image!r}")
        self.per_image = per_image

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
        return lovasz_softmax(logits.float().softmax(1), targets, ignore_index, self.per_image)

    def extra_repr(self) -> str:
        return f"per_image={self.per_image}"


@LOSSES.register("ohem")
class OhemCrossEntropy(ClassWeightedLoss):
    """Cross-entropy over the hard pixels only (online hard example mining): those
    :func:`hard_pixels` keeps, ``thresh`` and ``min_kept`` mmsegmentation's
    (``OHEMPixelSampler``, its Cityscapes recipes' 0.7 and 100000). The mean is over the
    kept pixels (by ``class_weights``, as weighted cross-entropy's), not over all."""

    # min_kept's default is a float so that the catalogue takes a fraction too
    def __init__(self, thresh: float = 0.7, min_kept: float = 100_000.0,
                 class_weights: Sequence[float] | None = None) -> None:
        super().__init__(class_weights)
        self.thresh = number_in(thresh, "loss.thresh", 0.0, 1.0)
        self.min_kept = min_kept_setting(min_kept)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
        labelled = targets != ignore_index
        log_p, classes = labelled_log_probs(logits, targets, labelled)
        with torch.no_grad():
            kept = hard_pixels(log_p.exp(), labelled, self.thresh, self.min_kept).float()
        weight = self.weight_on(logits.device)
        return weighted_mean(-log_p, kept if weight is None else kept * weight[classes])

    def extra_repr(self) -> str:
        return f"thresh={self.thresh}, min_kept={self.min_kept:g}"
