"""What the training loop calls besides training: the console, TensorBoard, and whatever
else a caller hands it (``RunParts.hooks``, e.g. seg.engine.kernels' learned kernels)."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from seg.clock import elapsed_and_eta
from seg.confusion_picture import draw_confusion
from seg.engine.checkpoints import RunInfo
from seg.engine.metrics import METRICS
from seg.engine.tensorboard import TensorBoardLogger, displayable

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Step:
    """What one training step reports. ``loss`` is the mean loss since the last read, at
    the steps where the trainer reads it (every ``log_every`` and before each save), else
    None: reading it is a wait for the device."""

    iteration: int
    max_iters: int
    loss: float | None
    lr: float
    images_per_s: float

    def due(self, every: int) -> bool:
        """Whether a task done every ``every`` iterations (and at the end) is due now."""
        return self.iteration % every == 0 or self.iteration == self.max_iters


# The hooks of modules of the user's own (``imports=[MODULE]``), besides those that seg's
# configs/callbacks/ name: what a callback's ``_target_`` may be (seg.training.check_callbacks).
REGISTERED_HOOKS: set[str] = set()


def register_hook(hook: type) -> type:
    """Class decorator: let a config's ``callbacks`` name ``hook`` (its
    ``module.ClassName`` as ``_target_``). The module that defines it is imported with
    ``imports=[MODULE]``; no other code can be named there."""
    REGISTERED_HOOKS.add(f"{hook.__module__}.{hook.__qualname__}")
    return hook


class Hook:
    """Called by ``Trainer.fit``; each method does nothing unless overridden."""

    def after_step(self, step: Step) -> None:
        """After each optimisation step."""

    def wants_evaluation(self, iteration: int, max_iters: int) -> bool:
        """Whether the trainer should evaluate after ``iteration`` of ``max_iters``, besides
        every ``trainer.eval_every`` and at the end."""
        return False

    def after_evaluation(self, iteration: int, metrics: dict,
                         shown: dict[str, torch.Tensor]) -> None:
        """After each evaluation on the val split; ``shown``: its first batch's images,
        targets and predictions."""


class Progress(Hook):
    """The console: a progress bar (``bar``) on a terminal, or else a log line every
    ``log_every`` iterations, which the run's log file keeps too. Only the main process
    shows either. Redirected to a file, a bar would fill it with carriage-return frames."""

    def __init__(self, show: bool, bar: bool, log_every: int, total: int, initial: int
                 ) -> None:
        self.show, self.log_every = show, log_every
        self.last_loss = float("nan")  # shown between the steps that read it
        self.initial, self.started = initial, time.monotonic()
        on_terminal = sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True,
                        disable=not (show and bar and on_terminal), mininterval=1.0)
        self.redirect = logging_redirect_tqdm()  # log lines above the bar, not through it

    def __enter__(self) -> Progress:
        self.redirect.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
        self.redirect.__exit__(*exc)

    def after_step(self, step: Step) -> None:
        self.last_loss = self.last_loss if step.loss is None else step.loss
        if not self.bar.disable:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{self.last_loss:.3f}", lr=f"{step.lr:.2e}",
                                 img_s=f"{step.images_per_s:.0f}", refresh=False)
        elif self.show and step.due(self.log_every):
            log.info("iteration %d/%d: loss %.4f, lr %.2e, %.0f images/s, %s", step.iteration,
                     step.max_iters, self.last_loss, step.lr, step.images_per_s,
                     self.timing(step))

    def timing(self, step: Step) -> str:
        """``elapsed 1 min, ETA 3 min``: the wall time since this process started training
        (evaluations and saves included) and the rest at the same pace."""
        return elapsed_and_eta(time.monotonic() - self.started, step.iteration - self.initial,
                               step.max_iters - self.initial)


class TensorBoardScalars(Hook):
    """Training loss, learning rate and speed every ``log_every`` iterations; after each
    evaluation every registered metric's scalars (seg.engine.metrics.METRICS), per-class
    IoU, a grid of examples and the confusion matrix.

    TensorBoard orders its cards by tag, and the tags are chosen for that order: first
    ``eval/mIoU`` then ``eval/per_class_iou/<class>`` (the group its Time Series opens
    on), ``eval_images/`` (examples, confusion matrix), ``eval_metrics/`` (the other
    metrics), then ``train/`` and the upsamplers' ``upsampler/``."""

    def __init__(self, logger: TensorBoardLogger, info: RunInfo, log_every: int) -> None:
        self.logger, self.info, self.log_every = logger, info, log_every

    def after_step(self, step: Step) -> None:
        if step.due(self.log_every) and step.loss is not None:
            self.logger.log_scalars({"train/loss": step.loss, "train/lr": step.lr,
                                     "train/images_per_s": step.images_per_s}, step.iteration)

    def after_evaluation(self, iteration: int, metrics: dict,
                         shown: dict[str, torch.Tensor]) -> None:
        info = self.info
        scalars = {metric_tag(key): metrics[key] for key in METRICS.scalar_keys()}
        for name, iou in zip(info.class_names, metrics["per_class_iou"], strict=True):
            if iou == iou:  # skip NaN: the class is absent from this split
                scalars[f"eval/per_class_iou/{name}"] = iou
        self.logger.log_scalars(scalars, iteration)
        self.logger.log_segmentation(
            "eval_images/examples", displayable(shown["image"]), shown["mask"],
            shown["prediction"], info.palette, iteration, class_names=info.class_names,
        )
        if "confusion_matrix" in metrics and len(info.class_names) <= MAX_CONFUSION_CLASSES:
            picture = draw_confusion(np.asarray(metrics["confusion_matrix"]), info.class_names)
            self.logger.log_picture("eval_images/confusion_matrix", picture, iteration)


# ADE20K's 150 classes would make a picture of 5,000 px a side at every evaluation: the
# events would grow by megabytes each time (seg-eval still draws it, once, on request)
MAX_CONFUSION_CLASSES = 40


def metric_tag(key: str) -> str:
    """The TensorBoard tag of an evaluation metric (see TensorBoardScalars' order)."""
    return "eval/mIoU" if key == "mIoU" else f"eval_metrics/{key}"
