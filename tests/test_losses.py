import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seg.data.labels import IGNORE_INDEX
from seg.data.readers import build_split
from seg.engine.losses import (
    LOSSES,
    FocalLoss,
    LovaszSoftmaxLoss,
    OhemCrossEntropy,
    SegmentationLoss,
    lovasz_steps,
    median_frequency_weights,
    soft_dice_loss,
)
from seg.errors import BadValue
from seg.training import loss_from_config, train


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


# -- class imbalance: focal, Lovász-softmax, OHEM, class weights ---------------------------

def pixels_of(logits: torch.Tensor, targets: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """``(float64 probabilities, class)`` of each labelled pixel, one by one."""
    probs = logits.double().softmax(1)
    return [(probs[b, :, i, j], int(targets[b, i, j]))
            for b in range(targets.shape[0]) for i in range(targets.shape[1])
            for j in range(targets.shape[2]) if targets[b, i, j] != IGNORE_INDEX]


def tiny_batch(seed: int = 0, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(2, classes, 3, 4) logits and targets; class ``classes - 1`` never appears, a few
    pixels are ignored."""
    torch.manual_seed(seed)
    logits = 2 * torch.randn(2, classes, 3, 4)
    targets = torch.randint(0, classes - 1, (2, 3, 4))
    targets[0, 0, :2] = IGNORE_INDEX
    targets[1, 2, 3] = IGNORE_INDEX
    return logits, targets


def test_focal_loss_is_its_formula_over_the_labelled_pixels() -> None:
    logits, targets = tiny_batch()
    alpha = [0.5, 2.0, 1.0, 3.0]
    for gamma, weights in ((2.0, None), (0.5, alpha)):
        terms = [-(alpha[y] if weights else 1) * (1 - p[y]) ** gamma * p[y].log()
                 for p, y in pixels_of(logits, targets)]
        expected = sum(terms) / len(terms)
        loss = LOSSES.build("focal", gamma=gamma, class_weights=weights)(logits, targets)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # gamma 0 without weights is cross-entropy
    ce = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    assert torch.allclose(FocalLoss(gamma=0.0)(logits, targets), ce)


def jaccard_loss_of(mispredicted: set[int], of_class: set[int]) -> float:
    """The Jaccard loss of a class whose mispredicted pixels are ``mispredicted``:
    ``|M| / |class pixels ∪ M|`` (Berman et al. 2018, eq. 5)."""
    return len(mispredicted) / len(of_class | mispredicted) if mispredicted else 0.0


def lovasz_from_definition(pixels: list[tuple[torch.Tensor, int]], num_classes: int) -> float:
    """The Lovász extension of each present class's Jaccard loss, from its definition:
    errors sorted in decreasing order, each weighted by the Jaccard loss's change when its
    pixel joins the mispredicted set; the mean over the present classes."""
    losses = []
    for c in range(num_classes):
        of_class = {i for i, (_, y) in enumerate(pixels) if y == c}
        if not of_class:
            continue
        errors = [abs(float(y == c) - p[c].item()) for p, y in pixels]
        order = sorted(range(len(pixels)), key=lambda i: -errors[i])
        loss, mispredicted = 0.0, set()
        for i in order:
            before = jaccard_loss_of(mispredicted, of_class)
            mispredicted.add(i)
            loss += errors[i] * (jaccard_loss_of(mispredicted, of_class) - before)
        losses.append(loss)
    return sum(losses) / len(losses)


def test_lovasz_softmax_is_the_lovasz_extension_of_the_jaccard_loss() -> None:
    logits, targets = tiny_batch()
    whole = lovasz_from_definition(pixels_of(logits, targets), 4)
    assert LovaszSoftmaxLoss()(logits, targets).item() == pytest.approx(whole, rel=1e-5)
    per_image = [lovasz_from_definition(pixels_of(logits[b:b + 1], targets[b:b + 1]), 4)
                 for b in range(2)]
    assert LovaszSoftmaxLoss(per_image=True)(logits, targets).item() == pytest.approx(
        sum(per_image) / 2, rel=1e-5)


def test_lovasz_steps_stay_exact_over_many_pixels() -> None:
    """Over a million pixels the steps are ~1e-7: float32 differences of successive
    Jaccard losses (the reference code's way) would lose them; the closed form does not."""
    fg = torch.rand(1_000_000, generator=torch.Generator().manual_seed(0)) < 0.3
    counts = fg.sum().double()
    jaccard = 1 - (counts - fg.double().cumsum(0)) / (counts + (~fg).double().cumsum(0))
    expected = torch.cat([jaccard[:1], jaccard.diff()])  # float64: good to ~1e-4 at worst
    assert torch.allclose(lovasz_steps(fg).double(), expected, rtol=1e-4, atol=0)
    in_float32 = torch.cat([jaccard[:1], jaccard.float().diff()]).double()
    assert not torch.allclose(in_float32, expected, rtol=0.5, atol=0)


def ohem_by_hand(logits: torch.Tensor, targets: torch.Tensor, thresh: float, kept: int,
                 weights: list[float] | None = None) -> float:
    """OHEMPixelSampler's rule written out: keep p_y below max(thresh, the sorted p_y at
    index min(kept, n - 1)); the mean cross-entropy of those (weighted by class)."""
    pixels = pixels_of(logits, targets)
    true_probs = sorted(p[y].item() for p, y in pixels)
    threshold = max(thresh, true_probs[min(kept, len(true_probs) - 1)])
    hard = [(p, y, weights[y] if weights else 1.0) for p, y in pixels if p[y] < threshold]
    return sum(-w * p[y].log().item() for p, y, w in hard) / sum(w for _, _, w in hard)


@pytest.mark.parametrize(("thresh", "min_kept", "kept"), [
    (0.7, 2, 4),  # 2 per image: thresh decides
    (0.0, 3, 6),  # thresh 0: the 6 hardest
    (0.05, 0.5, 10),  # half the batch's 20 labelled pixels
    (0.0, 100, 100),  # more than there are: all but the easiest (mmsegmentation's rule)
])
def test_ohem_keeps_the_pixels_mmsegmentation_keeps(thresh: float, min_kept: float,
                                                    kept: int) -> None:
    logits, targets = tiny_batch()
    loss = OhemCrossEntropy(thresh=thresh, min_kept=min_kept)(logits, targets)
    assert loss.item() == pytest.approx(ohem_by_hand(logits, targets, thresh, kept), rel=1e-5)


def test_class_weights_weigh_cross_entropy_as_torch_does() -> None:
    logits, targets = tiny_batch()
    weights = [0.5, 2.0, 1.0, 3.0]
    expected = F.cross_entropy(logits, targets, weight=torch.tensor(weights),
                               ignore_index=IGNORE_INDEX)
    assert torch.allclose(LOSSES.build("ce", class_weights=weights)(logits, targets), expected)
    # ce_dice: the weights weigh the cross-entropy term only
    dice = soft_dice_loss(logits.softmax(1), targets)
    ce_dice = SegmentationLoss(dice_weight=1.0, class_weights=weights)
    assert torch.allclose(ce_dice(logits, targets), expected + dice)
    # OHEM: torch's weighted mean over the kept pixels
    ohem = OhemCrossEntropy(thresh=0.0, min_kept=5, class_weights=weights)
    assert ohem(logits, targets).item() == pytest.approx(
        ohem_by_hand(logits, targets, 0.0, 10, weights), rel=1e-5)


NEW_LOSSES = [("focal", {"class_weights": [1.0, 2.0, 0.5, 1.0]}), ("lovasz", {}),
              ("lovasz", {"per_image": True}), ("ohem", {"min_kept": 0.25}),
              ("ce", {"class_weights": [1.0, 2.0, 0.5, 1.0]})]


@pytest.mark.parametrize(("name", "options"), NEW_LOSSES)
def test_new_losses_ignore_ignored_pixels_and_agree_in_bf16(name: str, options: dict) -> None:
    loss = LOSSES.build(name, **options)
    logits, targets = tiny_batch(seed=3)
    logits.requires_grad_(True)
    value = loss(logits, targets)
    value.backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[0, :, 0, :2] == 0).all()  # ignored pixels get no gradient
    # what ignored pixels predict changes nothing
    changed = logits.detach().clone()
    changed[0, :, 0, :2] = torch.randn(4, 2)
    assert torch.allclose(loss(changed, targets), value)
    in_bf16 = loss(logits.detach().bfloat16(), targets)
    assert in_bf16.dtype == torch.float32
    assert in_bf16.item() == pytest.approx(value.item(), rel=0.05, abs=0.01)


@pytest.mark.parametrize(("name", "options"), NEW_LOSSES)
def test_new_losses_are_zero_with_a_gradient_when_every_pixel_is_ignored(
        name: str, options: dict) -> None:
    logits = torch.randn(1, 4, 3, 3, requires_grad=True)
    targets = torch.full((1, 3, 3), IGNORE_INDEX)
    value = LOSSES.build(name, **options)(logits, targets)
    value.backward()
    # (ce is torch's, whose mean over no pixel is NaN)
    assert name == "ce" or (value.item() == 0 and torch.isfinite(logits.grad).all())


def test_median_frequency_weights() -> None:
    # present classes' counts 10, 40, 20: median 20; the absent class weighs 0
    assert median_frequency_weights([10, 0, 40, 20]) == [2.0, 0.0, 0.5, 1.0]
    with pytest.raises(BadValue, match="no labelled pixel"):
        median_frequency_weights([0, 0])


@pytest.mark.parametrize("weights", [[1.0, -1.0], [0.0, 0.0], "heavy", [1.0, float("nan")]])
def test_bad_class_weights_name_their_key(weights: object) -> None:
    with pytest.raises(BadValue, match="loss.class_weights"):
        LOSSES.build("focal", class_weights=weights)


@pytest.mark.parametrize(("name", "option", "value"), [
    ("focal", "gamma", -1.0), ("ohem", "thresh", 1.5), ("ohem", "min_kept", 2.5),
    ("ohem", "min_kept", 0), ("lovasz", "per_image", "yes")])
def test_bad_loss_options_name_their_key(name: str, option: str, value: object) -> None:
    with pytest.raises(BadValue, match=f"loss.{option}"):
        LOSSES.build(name, **{option: value})


def test_class_weights_auto_are_the_training_splits_median_frequencies(compose_train,
                                                                        caplog) -> None:
    cfg = compose_train("loss=ce", "loss.class_weights=auto")
    train_set = build_split(cfg.dataset, "train", None)
    counts = sum(np.bincount(train_set.load(i)[1].ravel(), minlength=256)
                 for i in range(len(train_set)))
    expected = median_frequency_weights(counts[:cfg.dataset.num_classes])
    with caplog.at_level("INFO", logger="seg.train"):
        loss = loss_from_config(cfg)
    assert loss.class_weights.tolist() == pytest.approx(expected)
    assert "loss.class_weights=auto: " in caplog.text  # one line naming them
    assert max(expected) > 1 > min(w for w in expected if w > 0)  # the shapes are imbalanced


def test_a_class_weights_list_is_one_per_class(compose_train) -> None:
    with pytest.raises(BadValue, match=r"loss.class_weights has 3 values .* 8 classes"):
        loss_from_config(compose_train("loss=focal", "loss.class_weights=[1,2,3]"))
    weights = [1, 2, 3, 4, 5, 6, 7, 8]
    loss = loss_from_config(compose_train("loss=ohem", f"loss.class_weights={weights}"))
    assert loss.class_weights.tolist() == weights
    with pytest.raises(BadValue, match="class_weights is not an option of the lovasz loss"):
        loss_from_config(compose_train("loss=lovasz", "+loss.class_weights=auto"))


@pytest.mark.parametrize("overrides", [
    ["loss=focal"], ["loss=lovasz"], ["loss=ohem"], ["loss=ce", "loss.class_weights=auto"]])
def test_seg_train_trains_with_each_loss(compose_train, tmp_path, overrides: list) -> None:
    metrics = train(compose_train(*overrides), tmp_path / "run")
    assert metrics["iterations"] == 2 and 0.0 <= metrics["mIoU"] <= 1.0
