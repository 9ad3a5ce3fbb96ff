"""Learning-rate schedule, checkpoints and the training step."""

import pytest
import torch

from seg.engine import Hook, PolyLR, Step, load_checkpoint, poly_factor, save_checkpoint


def test_poly_schedule_decays_to_zero_after_linear_warmup() -> None:
    assert poly_factor(0, 100) == 1.0
    assert poly_factor(50, 100) == pytest.approx(0.5**0.9)
    assert poly_factor(100, 100) == 0.0
    assert poly_factor(0, 100, warmup_iters=10, warmup_ratio=0.1) == pytest.approx(0.1)
    assert poly_factor(5, 100, warmup_iters=10, warmup_ratio=0.1) == pytest.approx(
        0.55 * (1 - 0.05) ** 0.9)


def test_poly_scheduler_steps_per_iteration() -> None:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = PolyLR(optimizer, total_iters=10, power=1.0)
    lrs = []
    for _ in range(10):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.09) and lrs[-1] == pytest.approx(0.0)


def test_checkpoint_save_is_atomic_and_loads_weights_only(tmp_path) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"iteration": 1, "model": {"w": torch.ones(2)}})
    save_checkpoint(path, {"iteration": 2, "model": {"w": torch.zeros(2)}})
    assert not list(path.parent.glob("*.tmp"))
    assert load_checkpoint(path)["iteration"] == 2
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_nan_loss_stops_the_run_naming_the_iteration_and_keeps_weights(tmp_path) -> None:
    from torch import nn
    from torch.utils.data import DataLoader

    from seg.engine import RunInfo, RunParts, Trainer
    from seg.engine.tensorboard import TensorBoardLogger

    model = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        model.bias.fill_(float("nan"))
    weight_before = model.weight.detach().clone()
    item = {"image": torch.randn(3, 4, 4), "mask": torch.zeros(4, 4, dtype=torch.long), "id": "x"}
    loader = DataLoader([item] * 4, batch_size=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(max_iters=3, eval_every=10, device="cpu", progress=False)
    info = RunInfo(class_names=["a", "b"], palette=[[0, 0, 0], [255, 0, 0]], mean=[0.0] * 3,
                   std=[1.0] * 3)
    logger = TensorBoardLogger(tmp_path / "tb")
    with pytest.raises(FloatingPointError, match="at iteration 1"):
        trainer.fit(RunParts(model, optimizer, PolyLR(optimizer, 3), loader, loader, info,
                             logger=logger), tmp_path)
    logger.close()
    assert torch.equal(model.weight, weight_before)  # the bad step was not applied


class LossesSeen(Hook):
    """The training loss at every step that reads it."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def after_step(self, step: Step) -> None:
        if step.loss is not None:
            self.seen.append(step.loss)


def test_native_stride_pretraining_scores_each_tap_against_nearest_labels(tmp_path) -> None:
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from seg.engine import RunInfo, Trainer
    from seg.engine.tensorboard import NullLogger
    from seg.models import build_encoder
    from seg.study.pretrain import NativeStrideClassifier, pretraining_parts

    torch.manual_seed(0)
    classifier = NativeStrideClassifier(build_encoder("simple", stem_width=8,
                                                      widths=[8, 8, 8, 8]), num_classes=3)
    labels = torch.arange(3).repeat_interleave(32).repeat(64, 1)[None, :64, :64]  # 3 bands
    labels[:, :8] = 255  # ignored rows
    scores = classifier(torch.randn(1, 3, 64, 64))
    assert [s.shape[-2:] for s in scores] == [(8, 8), (4, 4), (2, 2)]
    # the loss is the mean over taps of the cross-entropy against labels taken by nearest
    by_hand = [F.cross_entropy(s, labels[:, ::stride, ::stride], ignore_index=255)
               for s, stride in zip(scores, (8, 16, 32), strict=True)]
    loss = NativeStrideClassifier.loss(scores, labels)
    assert loss.item() == pytest.approx(sum(v.item() for v in by_hand) / 3, rel=1e-6)

    item = {"image": torch.randn(3, 64, 64), "mask": labels[0], "id": "x"}
    loader = DataLoader([item] * 4, batch_size=2)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=0.01)
    encoder_before = {k: v.clone() for k, v in classifier.encoder.state_dict().items()}
    info = RunInfo(class_names=["a", "b", "c"], palette=[[0, 0, 0]] * 3, mean=[0.0] * 3,
                   std=[1.0] * 3)
    losses = LossesSeen()
    parts = pretraining_parts(classifier, optimizer, PolyLR(optimizer, 30), loader, info,
                              NullLogger())
    parts.hooks.append(losses)
    Trainer(max_iters=30, device="cpu", log_every=1, progress=False).fit(parts, tmp_path)
    first, last = losses.seen[0], losses.seen[-1]
    assert not (tmp_path / "checkpoints" / "best.pt").exists()  # no val data: no evaluation
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 30
    assert last < first  # it learns the three bands
    after = classifier.encoder.state_dict()
    assert any(not torch.equal(encoder_before[k], after[k]) for k in after)
    assert not any(k.startswith("heads") for k in after)  # only the encoder is kept


@pytest.mark.parametrize(("shape", "columns", "padding", "pad_value"),
                         [((5, 3, 7, 9), 3, 2, 0.0), ((10, 1, 5, 5), 8, 1, 0.5),
                          ((2, 3, 4, 6), 3, 2, 0.0)])
def test_tile_lays_images_out_as_make_grid(shape, columns, padding, pad_value) -> None:
    from torchvision.utils import make_grid

    from seg.engine.tensorboard import tile

    images = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tile(images, columns, padding, pad_value),
                       make_grid(images, nrow=columns, padding=padding, pad_value=pad_value))


def test_segmentation_grid_has_column_titles_and_a_legend(tmp_path) -> None:
    from seg.drawing import STRIP_COLOUR
    from seg.engine.tensorboard import TensorBoardLogger, tile

    logger = TensorBoardLogger(tmp_path)
    logged = {}
    logger.writer.add_image = lambda tag, image, step: logged.update(image=image)
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(2, 40, 40, dtype=torch.long)
    labels[:, 10:20, 10:20] = 1  # class 2 is in neither: the legend still lists it
    logger.log_segmentation("val/examples", images, labels, labels, palette, 0,
                            class_names=["background", "crack", "moss"])
    logger.close()

    image = logged["image"]
    bare = tile(torch.zeros(6, 3, 40, 40), columns=3)
    assert image.dtype == torch.uint8 and image.shape[1] > bare.shape[1]
    assert image.shape[2] == bare.shape[2]
    pixels = image.permute(1, 2, 0)
    grid_top = int((pixels == 0).all(2).all(1).nonzero()[0])  # tile's black top padding
    titles = pixels[:grid_top].reshape(-1, 3)  # the strip above the grid holds some text
    assert (titles != torch.tensor(STRIP_COLOUR, dtype=torch.uint8)).any(1).any()
    legend = pixels[grid_top + bare.shape[1]:].reshape(-1, 3)  # below the grid
    assert len(legend) > 0
    for colour in palette:
        assert (legend == torch.tensor(colour, dtype=torch.uint8)).all(1).any()


@pytest.mark.parametrize("max_iters, count, expected", [
    (3200, 8, [50, 100, 200, 400, 800, 1600, 2400, 3200]),
    (100, 2, [75, 100]),
    (100, 1, [100]),
    (2, 8, [1, 2]),
    (100, 0, []),
])
def test_budgets_are_log_spaced_and_hold_three_quarters(max_iters, count, expected) -> None:
    from seg.study.curve import budgets

    assert sorted(budgets(max_iters, count)) == expected


def test_the_learning_curve_callback_records_its_evaluations(compose_train, tmp_path) -> None:
    import json

    from seg.training import train

    train(compose_train("trainer.max_iters=4", "callbacks=study",
                        "callbacks.learning_curve.count=2"), tmp_path)
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert [entry["iteration"] for entry in history] == [2, 3, 4]  # every 2, then 3/4 of 4
    assert all(set(entry["per_class_iou"]) >= {"background", "ring"} for entry in history)
    assert "confusion_matrix" not in history[0]


def test_progress_logs_lines_instead_of_a_bar_when_not_on_a_terminal(caplog) -> None:
    import io
    import sys

    from seg.engine.hooks import Progress, Step

    redirected = io.StringIO()  # stderr sent to a file: no carriage-return frames there
    original, sys.stderr = sys.stderr, redirected
    try:
        with caplog.at_level("INFO", logger="seg.engine.hooks"), Progress(
                show=True, bar=True, log_every=2, total=4, initial=0) as progress:
            for iteration in range(1, 5):
                progress.after_step(Step(iteration, 4, 0.5, 0.1, 10.0))
    finally:
        sys.stderr = original
    assert "\r" not in redirected.getvalue()
    lines = [r.getMessage() for r in caplog.records if "iteration" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["iteration 2/4", "iteration 4/4"]


def test_progress_says_elapsed_time_and_the_rest_at_the_same_pace(monkeypatch) -> None:
    from seg.engine import hooks
    from seg.engine.hooks import Progress, Step

    clock = iter([1000.0, 1090.0, 1300.0])  # started, then two reads
    monkeypatch.setattr(hooks.time, "monotonic", lambda: next(clock))
    progress = Progress(show=False, bar=False, log_every=1, total=400, initial=100)
    # 30 iterations (from 100) in 90 s: 3 s each, 270 to go
    assert progress.timing(Step(130, 400, 0.5, 0.1, 10.0)) == "elapsed 2 min, ETA 14 min"
    assert progress.timing(Step(400, 400, 0.5, 0.1, 10.0)) == "elapsed 5 min"  # done


def test_elapsed_and_eta_reads_as_a_person_says_it() -> None:
    from seg.clock import elapsed_and_eta

    assert elapsed_and_eta(30.0, 3, 12) == "elapsed 30 s, ETA 2 min"  # 90 s, to the minute
    assert elapsed_and_eta(30.0, 0, 12) == "elapsed 30 s"  # no pace yet
    assert elapsed_and_eta(4000.0, 12, 12) == "elapsed 1 h 07 min"  # done
