"""Images/s of ``Trainer.fit`` as a run trains: the trainer, optimizer, scheduler and run
info wired by hand from a composed config, and a hook that reads fit's own running rate
past the warm-up. The trainer, encoders and peer benchmarks train through it."""

from __future__ import annotations

from pathlib import Path

import torch

from seg.engine.hooks import Hook, Step


class SteadyRate(Hook):
    """Images/s of the steps after the first ``warmup`` of a fit, from the running rate that
    fit reports after each step (which counts the steps alone, batch waits included)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.marks = {0: 0.0}  # iteration: seconds of the steps so far per image of a batch

    def after_step(self, step: Step) -> None:
        if step.iteration in (self.warmup, step.max_iters):
            self.marks[step.iteration] = step.iteration / step.images_per_s

    def images_per_s(self) -> float:
        end = max(self.marks)
        return (end - self.warmup) / (self.marks[end] - self.marks[self.warmup])


def fit_images_per_second(cfg, model, batches, device: torch.device, folder: Path,
                          classes: int, warmup: int = 5, steps: int | None = None,
                          val: list | None = None) -> float:
    """Images/s of ``Trainer.fit`` over ``steps`` steps (default: one per batch of the list)
    after ``warmup`` steps of the same fit, on ``batches``: a list of batches (cycled) or a
    DataLoader, which so runs on without a new epoch's start. ``classes``: the model's
    class count, for the run info. Evaluation (on ``val``, default the first batch) and
    checkpoints are excluded, as fit itself counts them out."""
    from hydra.utils import instantiate

    from seg.engine import RunInfo, RunParts

    info = RunInfo(class_names=[str(i) for i in range(classes)], palette=[[0, 0, 0]] * classes,
                   mean=[0.0] * 3, std=[1.0] * 3)
    iters = warmup + (steps or len(batches))
    trainer = instantiate(cfg.trainer, max_iters=iters, eval_every=iters, progress=False,
                          device=str(device))
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    scheduler = instantiate(cfg.scheduler, total_iters=iters)(optimizer=optimizer)
    rate = SteadyRate(warmup)
    parts = RunParts(model, optimizer, scheduler, batches, batches[:1] if val is None else val,
                     info, hooks=[rate])  # logged nowhere: RunParts' NullLogger
    trainer.fit(parts, folder)
    return rate.images_per_s()
