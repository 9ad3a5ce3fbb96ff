"""Evaluation over a whole split: the registered metrics (seg.engine.metrics.METRICS)
accumulated on the evaluation device and summed over all processes in one collective."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from seg.data.labels import IGNORE_INDEX
from seg.engine.batches import warn_skipped
from seg.engine.distributed import all_reduce_sums
from seg.engine.metrics import (
    METRICS,
    ConfusionMatrix,
    EvaluatedBatch,
    EvaluationSetup,
    compute_all,
)
from seg.engine.precision import autocast

Infer = Callable[[nn.Module, torch.Tensor], torch.Tensor]
# What an evaluation may also hand each batch to: its sample ids, predictions and targets
# (seg-eval's worst images, seg.trained.error_analysis.WorstImages)
BatchHook = Callable[[Sequence[str], torch.Tensor, torch.Tensor], None]


class ForwardTimer:
    """Seconds spent in forward passes, measured without waiting for the device per pass:
    on CUDA a pair of events around each, summed once at the end; elsewhere the wall
    clock (the CPU runs each op before returning)."""

    def __init__(self, device: torch.device) -> None:
        self.on_cuda = device.type == "cuda"
        self.events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self.wall_seconds, self.started = 0.0, 0.0

    def start(self) -> None:
        if self.on_cuda:
            self.events.append((torch.cuda.Event(enable_timing=True),
                                torch.cuda.Event(enable_timing=True)))
            self.events[-1][0].record()
        else:
            self.started = time.perf_counter()

    def stop(self) -> None:
        if self.on_cuda:
            self.events[-1][1].record()
        else:
            self.wall_seconds += time.perf_counter() - self.started

    def seconds(self) -> float:
        """The total; on CUDA, the one wait for the device."""
        if not self.events:
            return self.wall_seconds
        self.events[-1][1].synchronize()
        return sum(start.elapsed_time(end) for start, end in self.events) / 1000


class Evaluator:
    """Metrics of a model over a split: one confusion matrix and what each registered
    metric counts (seg.engine.metrics.METRICS; those derived from the matrix share it),
    kept on ``device`` (no copy to the host per batch, and what NCCL can reduce) and
    summed over all processes when distributed; with them the first batch's
    images, targets and predictions for display. ``infer(model, images)`` gives the scores
    (default: ``model(images)``; see ``seg.trained.inference.Inference``); ``on_batch``, when
    given, sees each batch's ids, predictions and targets, on the device."""

    def __init__(self, num_classes: int, device: torch.device, ignore_index: int = IGNORE_INDEX,
                 boundary_tolerance: int | None = None, precision: str = "32",
                 infer: Infer | None = None, on_batch: BatchHook | None = None) -> None:
        self.num_classes = num_classes
        self.device = device
        self.ignore_index = ignore_index
        self.boundary_tolerance = boundary_tolerance
        self.precision = precision
        self.infer = infer
        self.on_batch = on_batch

    @torch.no_grad()
    def __call__(self, model: nn.Module, loader: DataLoader
                 ) -> tuple[dict, dict[str, torch.Tensor]]:
        was_training = model.training
        model.eval()
        confusion = ConfusionMatrix(self.num_classes, self.ignore_index, device=self.device)
        metrics = METRICS.for_evaluation(EvaluationSetup(
            confusion, self.boundary_tolerance, getattr(model, "output_stride", 1)))
        first_batch: dict[str, torch.Tensor] = {}
        timer, images_seen, skipped = ForwardTimer(self.device), 0, []
        for batch in loader:
            skipped += batch.get("skipped", [])
            if not len(batch["mask"]):
                continue
            images = batch["image"].to(self.device, non_blocking=True)
            targets = batch["mask"].to(self.device, non_blocking=True)
            timer.start()
            logits = self.scores(model, images)
            timer.stop()
            images_seen += len(images)
            # max's indices: the first maximum, as argmax gives, 5x faster on CPUs
            predictions = logits.max(1).indices
            confusion.update(predictions, targets)
            evaluated = EvaluatedBatch(logits, predictions, targets)
            for metric in metrics:
                metric.add(evaluated)
            if self.on_batch is not None:
                self.on_batch(batch.get("id", []), predictions, targets)
            first_batch = first_batch or {"image": images, "mask": targets,
                                          "prediction": predictions}
        model.train(was_training)
        warn_skipped(skipped, "evaluation")
        all_reduce_sums([confusion.matrix, confusion.out_of_range,
                         *(total for metric in metrics for total in metric.totals())])
        confusion.check_labels()  # before any metric: a bad label is the error to report
        values = {**compute_all(metrics),
                  "inference_ms_per_image": 1000 * timer.seconds() / max(images_seen, 1),
                  "confusion_matrix": confusion.matrix.tolist()}
        return values, first_batch

    def scores(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """fp32 scores of ``images``."""
        with autocast(self.device, self.precision):
            logits = model(images) if self.infer is None else self.infer(model, images)
        return logits.float()


def evaluate(
    model: nn.Module, loader: DataLoader, num_classes: int, device: torch.device,
    ignore_index: int = IGNORE_INDEX, boundary_tolerance: int | None = None, precision: str = "32",
    infer: Infer | None = None, on_batch: BatchHook | None = None,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """:class:`Evaluator`'s metrics and first batch, in one call."""
    evaluator = Evaluator(num_classes, device, ignore_index, boundary_tolerance, precision,
                          infer, on_batch)
    return evaluator(model, loader)


def name_per_class(metrics: dict, class_names: Sequence[str]) -> dict:
    """A copy of ``metrics`` whose ``per_class_*`` lists become ``{class name: value}``,
    with undefined (NaN) values as None so that JSON stays valid; so are those of every
    evaluation in its ``history``."""
    named = dict(metrics)
    for key, values in metrics.items():
        if key == "history":
            named[key] = [name_per_class(entry, class_names) for entry in values]
        elif key.startswith("per_class_"):
            named[key] = {name: (None if v != v else v)
                          for name, v in zip(class_names, values, strict=True)}
    return named
