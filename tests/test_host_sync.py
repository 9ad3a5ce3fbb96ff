"""The training step and evaluation never make the host wait for the device between the
points where a value is needed (seg.engine.census counts ``.item()``, copies to the
host and data-dependent shapes on the CPU too, where a GPU would drain its queue)."""

from __future__ import annotations

from dataclasses import replace
from itertools import islice
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from seg.engine import Hook, Step, Trainer
from seg.engine.census import KINDS, OpCensus, kind_of
from seg.engine.tensorboard import NullLogger
from seg.training import build_run, model_of

ITERATIONS, LOG_EVERY = 6, 3


class Phases(Hook):
    """Counts what follows each step (its read point, its save) under the next one."""

    def __init__(self, census: OpCensus) -> None:
        self.census = census

    def after_step(self, step: Step) -> None:
        self.census.phase = step.iteration + 1


def fit_in_census(cfg, tmp_path: Path, val_batches: int = 2) -> tuple[OpCensus, dict]:
    """``Trainer.fit`` on batches read beforehand (the loader's own tensors are the
    host's business), counted by iteration: phase ``i`` is step ``i``, its loss read
    and any save; phase ``ITERATIONS + 1`` the final evaluation."""
    trainer = instantiate(cfg.trainer, max_iters=ITERATIONS, eval_every=ITERATIONS,
                          log_every=LOG_EVERY)
    parts = build_run(cfg, tmp_path, trainer)
    parts.logger.close()
    train_batches = list(islice(parts.train_data, ITERATIONS))
    val = list(islice(parts.val_data, val_batches))
    assert len(val) == val_batches
    census = OpCensus()
    census.phase = 1
    parts = replace(parts, train_data=train_batches, val_data=val, hooks=[Phases(census)],
                    logger=NullLogger())
    with census:
        metrics = trainer.fit(parts, tmp_path)
    return census, metrics


@pytest.mark.parametrize("upsampler", ["transposed", "bilinear", "dysample", "carafe"])
def test_steps_between_read_points_never_wait_for_the_host(compose_train, tmp_path: Path,
                                                           upsampler: str) -> None:
    cfg = compose_train(f"model/upsampler={upsampler}", "dataset.val_max_batches=null")
    census, metrics = fit_in_census(cfg, tmp_path)
    assert metrics["iterations"] == ITERATIONS
    between = [i for i in range(2, ITERATIONS) if i % LOG_EVERY]  # 2, 4, 5
    assert {i: census.syncs[i] for i in between} == dict.fromkeys(between, 0), census.sync_ops
    # the first step reads its skip flag; every log_every-th its mean loss
    assert all(census.syncs[i] >= 1 for i in (1, LOG_EVERY, ITERATIONS))
    assert census.counts["convolution"] > 0 and census.counts["optimizer"] > 0


def test_a_nan_step_is_skipped_on_the_device(compose_train, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Fused AdamW takes the skip flag as ``found_inf``: the weights and the optimizer's
    state (its step count too) stay as they were, with no wait, and the next read point
    counts the step."""
    cfg = compose_train("trainer.on_nan=skip")
    assert cfg.optimizer.fused
    calls, kept = [], {}
    original = Trainer.train_step

    def poison_step_four(self, model, optimizer, batch, *args, **kwargs):
        calls.append(len(calls) + 1)
        if len(calls) != 4:
            return original(self, model, optimizer, batch, *args, **kwargs)
        def snapshot():  # compared after the census: a comparison is a read-back
            states = [t for state in optimizer.state.values() for t in state.values()]
            return [t.detach().clone() for t in [*model.parameters(), *states]]
        kept["before"] = snapshot()
        batch = {**batch, "image": torch.full_like(batch["image"], float("nan"))}
        result = original(self, model, optimizer, batch, *args, **kwargs)
        kept["after"] = snapshot()
        return result

    monkeypatch.setattr(Trainer, "train_step", poison_step_four)
    census, metrics = fit_in_census(cfg, tmp_path)
    assert metrics["nonfinite_losses"] == 1 and census.syncs[4] == 0
    assert len(kept["before"]) > len(list(model_parameters(cfg)))  # the state is compared
    assert all(torch.equal(a, b) for a, b in zip(kept["before"], kept["after"], strict=True))


def model_parameters(cfg):
    return model_of(cfg.model, cfg.dataset.num_classes).parameters()


def test_evaluation_waits_the_same_for_any_number_of_batches(
        compose_train, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("seg.engine.metrics.BINCOUNT_ON_CPU", False)  # the path a GPU takes
    cfg = compose_train("dataset.val_max_batches=null", "dataset.val_batch_size=1")
    syncs = []
    for batches in (1, 4):
        census, _ = fit_in_census(cfg, tmp_path / str(batches), val_batches=batches)
        syncs.append(census.syncs[ITERATIONS + 1])
    assert syncs[0] == syncs[1] > 0


def test_the_census_sorts_ops_by_kind() -> None:
    census = OpCensus()
    conv = torch.nn.Conv2d(3, 4, 3)
    with census, census.within(conv):
        out = conv(torch.randn(1, 3, 8, 8).to(memory_format=torch.channels_last))
        out.bfloat16().relu().sum().item()
    assert set(census.counts) <= set(KINDS)
    assert census.counts["convolution"] == 1 and census.counts["host_sync"] == 1
    assert census.counts["cast"] == 1 and any("float32" in c and "bfloat16" in c
                                              for c in census.copies)
    assert census.allocated_bytes >= out.numel() * 4
    assert kind_of(torch.ops.aten.add.Tensor) == "elementwise"
    assert kind_of(torch.ops.aten.mm.default) == "matmul"
    assert kind_of(torch.ops.aten.view.default) == "view"
