"""Training and evaluation loops, learning-rate schedule, checkpoints and resume."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from seg.metrics import BoundaryMetrics, ConfusionMatrix, PhaseConfidence
from seg.models.model import NativeStrideClassifier
from seg.models.upsamplers import kernel_drift
from seg.reporting import TensorBoardLogger, denormalize

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; ``deterministic`` also forbids nondeterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def poly_factor(
    iteration: int, total_iters: int, power: float = 0.9, warmup_iters: int = 0,
    warmup_ratio: float = 0.1,
) -> float:
    """Learning-rate multiplier: linear warmup, then ``(1 - t / T) ** power``."""
    factor = (1 - min(iteration, total_iters) / total_iters) ** power
    if iteration < warmup_iters:
        factor *= warmup_ratio + (1 - warmup_ratio) * iteration / warmup_iters
    return factor


class PolyLR(LRScheduler):
    """Poly learning-rate decay stepped once per iteration, with optional linear warmup."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, total_iters: int, power: float = 0.9,
        warmup_iters: int = 0, warmup_ratio: float = 0.1,
    ) -> None:
        self.total_iters = total_iters
        self.power = power
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio
        super().__init__(optimizer)

    def state_dict(self) -> dict:
        # The schedule's shape comes from the config, so a resumed run may extend it.
        state = super().state_dict()
        for key in ("total_iters", "power", "warmup_iters", "warmup_ratio"):
            state.pop(key)
        return state

    def get_lr(self) -> list[float]:
        factor = poly_factor(self.last_epoch, self.total_iters, self.power,
                             self.warmup_iters, self.warmup_ratio)
        return [base_lr * factor for base_lr in self.base_lrs]


@dataclass
class RunInfo:
    """What a checkpoint carries besides weights, so it can be used on its own."""

    class_names: list[str]
    palette: list[list[int]]
    mean: list[float]
    std: list[float]
    config: dict = field(default_factory=dict)
    ignore_index: int = 255


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a crash during the save leaves the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found: pass the path of a run's "
                                "checkpoints/last.pt or best.pt")
    return torch.load(path, map_location="cpu", weights_only=True)


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, num_classes: int, device: torch.device,
    ignore_index: int = 255, boundary_tolerance: int = 2,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Metrics over the whole split (one confusion matrix, boundary counts and phase
    confidences), and the first batch's images, targets and predictions for display."""
    model.eval()
    confusion = ConfusionMatrix(num_classes, ignore_index, device=str(device))
    boundary = BoundaryMetrics(num_classes, boundary_tolerance, ignore_index)
    phase = PhaseConfidence(getattr(model, "output_stride", 1))
    first_batch: dict[str, torch.Tensor] = {}
    forward_seconds, images_seen = 0.0, 0
    skipped: list[str] = []
    for batch in loader:
        skipped += batch.get("skipped", [])
        if not len(batch["mask"]):
            continue
        images = batch["image"].to(device, non_blocking=True)
        targets = batch["mask"].to(device, non_blocking=True)
        synchronize(device)
        start = time.perf_counter()
        logits = model(images)
        synchronize(device)
        forward_seconds += time.perf_counter() - start
        images_seen += images.shape[0]
        predictions = logits.argmax(1)
        confusion.update(predictions, targets)
        boundary.update(predictions, targets)
        phase.update(logits.softmax(1), targets != ignore_index)
        if not first_batch:
            first_batch = {"image": images, "mask": targets, "prediction": predictions}
    model.train()
    warn_skipped(skipped, "evaluation")
    metrics = {**confusion.compute(), **boundary.compute(), "checkerboard": phase.compute(),
               "inference_ms_per_image": 1000 * forward_seconds / max(images_seen, 1)}
    return metrics, first_batch


def segmentation_loss(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = 255
) -> torch.Tensor:
    """Per-pixel cross-entropy of ``(B, K, H, W)`` logits; ``ignore_index`` pixels count nowhere."""
    return F.cross_entropy(logits, targets, ignore_index=ignore_index)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warn_skipped(skipped: list[str], where: str) -> None:
    """One warning for the samples a dataset skipped (``dataset.on_error=skip``)."""
    if skipped:
        shown = "; ".join(skipped[:5]) + ("; ..." if len(skipped) > 5 else "")
        log.warning("%s skipped %d bad sample(s) (dataset.on_error=skip): %s", where,
                    len(skipped), shown)


def endless(loader: DataLoader, epoch: int) -> Iterator[tuple[int, dict]]:
    """Batches over epochs without end, telling each batch's epoch. Batches whose samples
    were all skipped are left out; the skipped samples are reported after each epoch."""
    while True:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        skipped: list[str] = []
        for batch in loader:
            skipped += batch.get("skipped", [])
            if len(batch["mask"]):
                yield epoch, batch
        warn_skipped(skipped, f"epoch {epoch}")
        epoch += 1


class Trainer:
    """Iteration-based training with periodic evaluation, checkpoints and resume.

    ``resume`` is false, true (this run folder's ``checkpoints/last.pt``) or a path
    to a checkpoint file or to a run folder.
    """

    def __init__(
        self,
        max_iters: int = 2000,
        eval_every: int = 500,
        device: str = "auto",
        deterministic: bool = False,
        resume: bool | str = False,
        grad_clip: float | None = None,
        log_every: int = 20,
        progress: bool = True,
        channels_last: bool = True,
    ) -> None:
        self.max_iters = max_iters
        self.eval_every = eval_every
        self.device = resolve_device(device)
        self.deterministic = deterministic
        self.resume = resume
        self.grad_clip = grad_clip
        self.log_every = log_every
        self.progress = progress
        # NHWC convolutions are faster on CPUs (oneDNN) and tensor cores alike.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def resume_path(self, run_dir: Path) -> Path | None:
        if self.resume is False or self.resume is None:
            return None
        if self.resume is True:
            path = run_dir / "checkpoints" / "last.pt"
        else:
            path = Path(self.resume)
            path = path / "checkpoints" / "last.pt" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(
                f"trainer.resume: no checkpoint at {path}; set trainer.resume to a run folder or "
                "checkpoint file, or run in the old folder with hydra.run.dir=<run folder>"
            )
        return path

    def fit(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: LRScheduler,
        train_loader: DataLoader,
        val_loader: DataLoader,
        run_dir: Path,
        logger: TensorBoardLogger,
        info: RunInfo,
    ) -> dict:
        """Train to ``max_iters``; return the final evaluation's metrics (also in metrics.json)."""
        run_dir = Path(run_dir)
        checkpoints = run_dir / "checkpoints"
        model.to(self.device, memory_format=self.memory_format).train()
        iteration, epoch, best_miou = 0, 0, -1.0
        resume_from = self.resume_path(run_dir)
        if resume_from is not None:
            state = load_checkpoint(resume_from)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            iteration, epoch, best_miou = state["iteration"], state["epoch"], state["best_miou"]
            log.info("resumed from %s at iteration %d", resume_from, iteration)

        def checkpoint_state() -> dict:
            return {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "iteration": iteration,
                "epoch": epoch,
                "best_miou": best_miou,
                **asdict(info),
            }

        metrics: dict = {}
        train_seconds, train_images = 0.0, 0
        start = time.perf_counter()
        # Log lines go through tqdm.write, above the progress bar instead of through it.
        with logging_redirect_tqdm(), tqdm(
            total=self.max_iters, initial=iteration, disable=not self.progress, desc="train",
            dynamic_ncols=True, mininterval=1.0,
        ) as bar:
            batches = endless(train_loader, epoch)
            step_start = time.perf_counter()
            while iteration < self.max_iters:
                # forward / backward / step
                epoch, batch = next(batches)
                loss_value = self.train_step(model, optimizer, batch, info.ignore_index)
                if not math.isfinite(loss_value):
                    raise FloatingPointError(
                        f"loss is {loss_value} at iteration {iteration + 1}; the last good "
                        f"checkpoint is kept in {checkpoints}: lower optimizer.lr or set "
                        "trainer.grad_clip"
                    )
                scheduler.step()
                iteration += 1
                now = time.perf_counter()
                train_seconds += now - step_start
                train_images += len(batch["mask"])

                # log
                images_per_s = train_images / max(train_seconds, 1e-9)
                lr = optimizer.param_groups[0]["lr"]
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}",
                                img_s=f"{images_per_s:.0f}", refresh=False)
                if iteration % self.log_every == 0 or iteration == self.max_iters:
                    logger.log_scalars({"train/loss": loss_value, "train/lr": lr,
                                        "train/images_per_s": images_per_s}, iteration)

                # evaluate and checkpoint
                if iteration % self.eval_every == 0 or iteration == self.max_iters:
                    metrics, shown = evaluate(model, val_loader, len(info.class_names),
                                              self.device, info.ignore_index)
                    self.log_evaluation(logger, metrics, shown, info, iteration)
                    self.log_upsamplers(logger, model, iteration)
                    log.info("iteration %d: val mIoU %.4f, pixel acc %.4f", iteration,
                             metrics["mIoU"], metrics["pixel_acc"])
                    if metrics["mIoU"] > best_miou:
                        best_miou = metrics["mIoU"]
                        save_checkpoint(checkpoints / "best.pt", checkpoint_state())
                    save_checkpoint(checkpoints / "last.pt", checkpoint_state())
                step_start = time.perf_counter()
        if not metrics:  # resumed at max_iters: evaluate what was loaded
            metrics, _ = evaluate(model, val_loader, len(info.class_names), self.device,
                                  info.ignore_index)
        return {
            **metrics,
            "best_mIoU": max(best_miou, metrics["mIoU"]),
            "iterations": iteration,
            "train_images_per_s": train_images / train_seconds if train_seconds else 0.0,
            "wall_s": time.perf_counter() - start,
        }

    def pretrain(
        self,
        classifier: NativeStrideClassifier,
        optimizer: torch.optim.Optimizer,
        scheduler: LRScheduler,
        loader: DataLoader,
        iterations: int,
        logger: TensorBoardLogger,
        ignore_index: int = 255,
    ) -> float:
        """Train an encoder with per-tap heads at the taps' own strides (no upsampling) for
        ``iterations`` steps; return the mean loss of the last ``log_every`` steps."""
        classifier.to(self.device, memory_format=self.memory_format).train()
        batches = endless(loader, 0)
        recent: list[float] = []
        for iteration in range(1, iterations + 1):
            _, batch = next(batches)
            loss_value = self.train_step(classifier, optimizer, batch, ignore_index,
                                         criterion=classifier.loss)
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"pretraining loss is {loss_value} at iteration "
                                         f"{iteration}: lower pretrain.lr")
            scheduler.step()
            recent = [*recent[-self.log_every + 1:], loss_value]
            if iteration % self.log_every == 0 or iteration == iterations:
                logger.log_scalars({"pretrain/loss": sum(recent) / len(recent),
                                    "pretrain/lr": optimizer.param_groups[0]["lr"]}, iteration)
            if iteration % (10 * self.log_every) == 0:
                log.info("pretraining iteration %d/%d: loss %.4f", iteration, iterations,
                         sum(recent) / len(recent))
        return sum(recent) / max(len(recent), 1)

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict, ignore_index: int,
        criterion: Callable[..., torch.Tensor] = segmentation_loss,
    ) -> float:
        """One optimisation step on ``batch``; returns the loss. A non-finite loss is not
        applied, so the weights stay those of the last good step. ``criterion(output,
        targets, ignore_index)`` defaults to per-pixel cross-entropy."""
        images = batch["image"].to(self.device, non_blocking=True,
                                   memory_format=self.memory_format)
        targets = batch["mask"].to(self.device, non_blocking=True)
        loss = criterion(model(images), targets, ignore_index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
        loss_value = loss.item()
        if math.isfinite(loss_value):
            optimizer.step()
        return loss_value

    @staticmethod
    def log_upsamplers(logger: TensorBoardLogger, model: nn.Module, iteration: int) -> None:
        """For each learned upsampling step (0 = coarsest): its kernels and their drift."""
        steps = model.upsamplers() if hasattr(model, "upsamplers") else []
        for index, upsampler in enumerate(steps):
            drift = kernel_drift(upsampler)
            if drift is None or not upsampler.weight.requires_grad:
                continue
            logger.log_scalars({f"upsampler/{index}_kernel_drift": drift}, iteration)
            logger.log_kernels(f"upsampler/{index}_kernels", upsampler.weight, iteration)

    @staticmethod
    def log_evaluation(
        logger: TensorBoardLogger, metrics: dict, shown: dict[str, torch.Tensor], info: RunInfo,
        iteration: int,
    ) -> None:
        keys = ("mIoU", "pixel_acc", "mean_acc", "fw_iou", "boundary_f", "boundary_iou",
                "checkerboard")
        scalars = {f"val/{key}": metrics[key] for key in keys}
        for name, iou in zip(info.class_names, metrics["per_class_iou"], strict=True):
            if iou == iou:  # skip NaN: the class is absent from this split
                scalars[f"val_iou/{name}"] = iou
        logger.log_scalars(scalars, iteration)
        logger.log_segmentation(
            "val/examples", denormalize(shown["image"], info.mean, info.std), shown["mask"],
            shown["prediction"], info.palette, iteration,
        )


def name_per_class(metrics: dict, class_names: Sequence[str]) -> dict:
    """A copy of ``metrics`` whose ``per_class_*`` lists become ``{class name: value}``,
    with undefined (NaN) values as None so that JSON stays valid."""
    named = dict(metrics)
    for key, values in metrics.items():
        if key.startswith("per_class_"):
            named[key] = {name: (None if v != v else v)
                          for name, v in zip(class_names, values, strict=True)}
    return named
