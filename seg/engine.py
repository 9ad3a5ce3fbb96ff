"""Training and evaluation loops, learning-rate schedule, checkpoints and resume."""

from __future__ import annotations

import logging
import math
import os
import pickle
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from seg.checks import one_of, positive_int, positive_number
from seg.distributed import (
    ProcessGroup,
    all_reduce_sum,
    barrier,
    broadcast_from_main,
    process_device,
)
from seg.metrics import BoundaryMetrics, ConfusionMatrix, PhaseConfidence
from seg.models.model import NativeStrideClassifier
from seg.models.upsamplers import kernel_drift
from seg.reporting import TensorBoardLogger, denormalize

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto", key: str = "device") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; a device that is not here is an
    error naming ``key``, the setting it came from."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{key}={device!r} is not a device: use auto, cpu, cuda or "
                         "cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{key}={device} but no CUDA GPU is visible here: use {key}=auto "
                         "or cpu")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"{key}={device} but this machine has {torch.cuda.device_count()} "
                         "GPU(s): use cuda:0 to cuda:N-1, or auto")
    return resolved


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
    """Write atomically: into a temporary file, flushed to disk, then renamed over the old
    one, so that a kill or crash during the save leaves the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself reaches the disk
    finally:
        os.close(directory)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found: pass the path of a run's "
                                "checkpoints/last.pt or best.pt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if path.stat().st_size == 0:
            reason = "the file is empty"
        raise ValueError(f"checkpoint {path} cannot be read ({reason}): use another one, "
                         "e.g. checkpoints/best.pt of the same run") from None


def load_model_state(model: nn.Module, state_dict: dict, source: str | Path) -> None:
    """Load weights, or say which keys do not fit (a checkpoint of another model config)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    reshaped = [f"{key} {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}"
                for key in own if key in state_dict and state_dict[key].shape != own[key].shape]
    if missing or unexpected or reshaped:
        parts = [f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("other shape (checkpoint vs model)", reshaped)) if keys]
        raise ValueError(f"{source} was saved by another model configuration ({'; '.join(parts)}"
                         "): use the model settings it was trained with (its run's "
                         ".hydra/config.yaml)")
    model.load_state_dict(state_dict)


# -- precision ------------------------------------------------------------------------------

PRECISIONS = ("32", "bf16", "16", "auto")


def cpu_has_bf16() -> bool:
    """True where oneDNN runs bf16 natively (AVX512-BF16 or AMX); elsewhere it emulates
    bf16 and is slower than fp32."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_precision(precision: str | int, device: torch.device) -> str:
    """``auto`` picks the fastest safe mode: bf16 on GPUs and CPUs that support it, fp16
    (with gradient scaling) on older GPUs, fp32 otherwise."""
    precision = str(precision)
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision={precision}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "16"
        return "bf16" if device.type == "cpu" and cpu_has_bf16() else "32"
    if precision == "16" and device.type != "cuda":
        raise ValueError("trainer.precision=16 needs CUDA: use bf16 or 32 on the CPU")
    return precision


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` (a no-op for fp32)."""
    dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


# -- evaluation -----------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, num_classes: int, device: torch.device,
    ignore_index: int = 255, boundary_tolerance: int = 2, precision: str = "32",
    infer: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Metrics over the whole split (one confusion matrix, boundary counts and phase
    confidences, summed over all processes when distributed), and the first batch's
    images, targets and predictions for display. ``infer(model, images)`` gives the
    scores (default: ``model(images)``; see ``seg.inference.Inference``)."""
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
        with autocast(device, precision):
            logits = (model(images) if infer is None else infer(model, images)).float()
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
    for counts in (confusion.matrix, boundary.counts, phase.sums, phase.counts):
        all_reduce_sum(counts)
    metrics = {**confusion.compute(), **boundary.compute(), "checkerboard": phase.compute(),
               "inference_ms_per_image": 1000 * forward_seconds / max(images_seen, 1),
               "confusion_matrix": confusion.matrix.tolist()}
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


def endless(loader: DataLoader, epoch: int, start: int = 0) -> Iterator[tuple[int, int, dict]]:
    """``(epoch, batches of the epoch done, batch)`` over epochs without end, from batch
    ``start`` of ``epoch`` (where a resumed run left off). Batches whose samples were all
    skipped are left out; the skipped samples are reported after each epoch."""
    sampler = getattr(loader, "sampler", None)
    while True:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch, start * loader.batch_size)
        skipped: list[str] = []
        for done, batch in enumerate(loader, start + 1):
            skipped += batch.get("skipped", [])
            if len(batch["mask"]):
                yield epoch, done, batch
        warn_skipped(skipped, f"epoch {epoch}")
        epoch, start = epoch + 1, 0


# -- never lose a run -----------------------------------------------------------------------


def rng_state() -> dict:
    """Every global random state (python, numpy, torch, CUDA), in types that
    ``torch.load(weights_only=True)`` accepts."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def earlier_run(run_dir: Path) -> Path | None:
    """What shows that ``run_dir`` already holds a run: a checkpoint, metrics.json or
    TensorBoard events (Hydra's own .hydra/ and log file do not count)."""
    found = [*sorted(run_dir.glob("checkpoints/*.pt")), run_dir / "metrics.json",
             *sorted(run_dir.glob("tb/events.out.tfevents.*"))]
    return next((path for path in found if path.is_file()), None)


def earlier_run_problem(run_dir: Path, resume_from: Path | None, restart: bool = False
                        ) -> str | None:
    """Why training into ``run_dir`` would replace an earlier run, or None: it holds one,
    and the run does not continue it (from one of its own checkpoints). ``restart``
    (``resume=auto``) may start afresh over a run that left only TensorBoard events: a
    requeued job killed before its first checkpoint."""
    found = earlier_run(run_dir)
    if found is None or (restart and found.parent.name == "tb"):
        return None
    if resume_from is not None and resume_from.resolve().is_relative_to(run_dir.resolve()):
        return None
    return (f"run folder {run_dir} already holds a run ({found.relative_to(run_dir)}): "
            "continue it with trainer.resume=auto, or train into a new folder "
            "(hydra.run.dir=PATH)")


class TrainingInterrupted(Exception):
    """A stop signal arrived; the last checkpoint was saved just before this was raised."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path) -> None:
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} at iteration {iteration}; saved {checkpoint}: "
                         "resume with trainer.resume=auto in the same run folder "
                         f"(hydra.run.dir={checkpoint.parent.parent}) or "
                         f"trainer.resume={checkpoint}")


class StopSignals:
    """SIGTERM (SLURM preemption, ``kill``), SIGINT (Ctrl-C) and SIGUSR2 (SLURM's warning
    before the time limit) become a flag the training loop checks between steps, so that it
    saves a checkpoint first. A second Ctrl-C stops at once.

    ``forward()`` then hands the signal to the handler that was there before (submitit's
    requeues the job on SIGUSR2)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signals need it
            for signum in STOP_SIGNALS:
                self.previous[signum] = signal.signal(signum, self.handle)
        return self

    def handle(self, signum: int, frame: object) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        log.warning("%s received: stopping after this step", signal.Signals(signum).name)

    def forward(self) -> None:
        handler = self.previous.get(self.received)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(self.received, None)

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR2")
                     if hasattr(signal, name))


# -- training -------------------------------------------------------------------------------


class Trainer:
    """Iteration-based training with periodic evaluation, checkpoints and exact resume,
    on one process or many (see :meth:`join`).

    ``resume`` is false, true (this run folder's ``checkpoints/last.pt``), ``auto`` (that
    file if it exists, else a fresh start: what a requeued job wants) or a path to a
    checkpoint file or a run folder. ``precision`` is 32, bf16, 16 (CUDA, with gradient
    scaling) or auto; ``on_nan`` is ``stop`` (keep the last good checkpoint and say where)
    or ``skip`` (leave the batch out and go on).
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
        precision: str | int = "32",
        compile: bool = False,
        sync_bn: bool = False,
        checkpoint_every: int | None = None,
        on_nan: str = "stop",
    ) -> None:
        one_of(on_nan, "trainer.on_nan", ("stop", "skip"))
        self.max_iters = positive_int(max_iters, "trainer.max_iters")
        self.eval_every = positive_int(eval_every, "trainer.eval_every")
        self.device = resolve_device(device, "trainer.device")
        self.deterministic = deterministic
        self.resume = resume
        self.grad_clip = positive_number(grad_clip, "trainer.grad_clip", allow_none=True)
        self.log_every = positive_int(log_every, "trainer.log_every")
        self.progress = progress
        # NHWC convolutions are faster on CPUs (oneDNN) and tensor cores alike.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.precision = resolve_precision(precision, self.device)
        self.compile = compile
        self.sync_bn = sync_bn
        self.checkpoint_every = positive_int(checkpoint_every, "trainer.checkpoint_every",
                                             allow_none=True) or eval_every
        self.on_nan = on_nan
        self.group = ProcessGroup()
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "16" else None

    def join(self, group: ProcessGroup) -> None:
        """Train as one of ``group``'s processes (each on its own GPU when on CUDA)."""
        self.group = group
        self.device = process_device(self.device, group)

    def resume_path(self, run_dir: Path) -> Path | None:
        if self.resume is False or self.resume is None:
            return None
        if self.resume in (True, "auto"):
            path = run_dir / "checkpoints" / "last.pt"
            if self.resume == "auto" and not path.is_file():
                return None
        else:
            path = Path(self.resume)
            path = path / "checkpoints" / "last.pt" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(
                f"trainer.resume: no checkpoint at {path}; set trainer.resume to a run folder or "
                "checkpoint file, or run in the old folder with hydra.run.dir=<run folder>"
            )
        return path

    def resume_state(self, run_dir: Path) -> dict | None:
        """The checkpoint to resume from (see ``resume``), or None for a fresh start. A
        run folder that already holds another run is refused: nothing replaces it."""
        path = self.resume_path(Path(run_dir))
        # rank 0 looks before any rank writes, and every rank gets its answer
        problem = broadcast_from_main(
            earlier_run_problem(Path(run_dir), path, restart=self.resume == "auto")
            if self.group.is_main else None)
        if problem:
            raise FileExistsError(problem)
        if path is None:
            return None
        state = load_checkpoint(path)
        state["path"] = str(path)
        return state

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
        resume_from: dict | None = None,
    ) -> dict:
        """Train to ``max_iters``, continuing ``resume_from`` (a checkpoint) when given;
        return the final evaluation's metrics (also in metrics.json)."""
        checkpoints = Path(run_dir) / "checkpoints"
        model.to(self.device, memory_format=self.memory_format).train()
        iteration, epoch, epoch_batches, best_miou, pending = self.restore(
            resume_from, model, optimizer, scheduler)
        net = self.prepare(model)

        def save(name: str, pending_evaluation: bool = False) -> Path:
            return self.save(checkpoints / name, lambda: {
                **self.training_state(model, optimizer, scheduler),
                "iteration": iteration, "epoch": epoch, "epoch_batches": epoch_batches,
                "best_miou": best_miou, "pending_evaluation": pending_evaluation,
                **asdict(info),
            })

        def evaluate_and_save() -> dict:
            """Evaluate, log, keep the best; last.pt is saved first (marked pending), so
            that an evaluation that fails (a bad val image) loses nothing trained, and a
            run resumed from it evaluates before it goes on."""
            nonlocal best_miou
            save("last.pt", pending_evaluation=True)
            metrics, shown = evaluate(model, val_loader, len(info.class_names), self.device,
                                      info.ignore_index, precision=self.precision)
            self.log_evaluation(logger, metrics, shown, info, iteration)
            self.log_upsamplers(logger, model, iteration)
            log.info("iteration %d: val mIoU %.4f, pixel acc %.4f", iteration,
                     metrics["mIoU"], metrics["pixel_acc"])
            if metrics["mIoU"] > best_miou:
                best_miou = metrics["mIoU"]
                save("best.pt")
            save("last.pt")
            return metrics

        metrics: dict = {}
        if pending:  # saved just before an evaluation that did not finish
            metrics = evaluate_and_save()
        train_seconds, train_images, nonfinite = 0.0, 0, 0
        start = time.perf_counter()
        # Log lines go through tqdm.write, above the progress bar instead of through it.
        with StopSignals() as signals, logging_redirect_tqdm(), tqdm(
            total=self.max_iters, initial=iteration, desc="train", dynamic_ncols=True,
            disable=not self.shows_progress, mininterval=1.0,
        ) as bar:
            batches = endless(train_loader, epoch, epoch_batches)
            step_start = time.perf_counter()
            while iteration < self.max_iters:
                # forward / backward / step
                epoch, epoch_batches, batch = next(batches)
                loss_value = self.train_step(net, optimizer, batch, info.ignore_index)
                nonfinite += self.count_nonfinite(loss_value, iteration + 1, checkpoints)
                scheduler.step()
                iteration += 1
                now = time.perf_counter()
                train_seconds += now - step_start
                train_images += len(batch["mask"]) * self.group.world_size

                # log
                images_per_s = train_images / max(train_seconds, 1e-9)
                lr = optimizer.param_groups[0]["lr"]
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}",
                                img_s=f"{images_per_s:.0f}", refresh=False)
                if self.due(iteration, self.log_every):
                    logger.log_scalars({"train/loss": loss_value, "train/lr": lr,
                                        "train/images_per_s": images_per_s}, iteration)

                # evaluate and checkpoint
                if self.due(iteration, self.eval_every):
                    metrics = evaluate_and_save()
                elif iteration % self.checkpoint_every == 0:
                    save("last.pt")
                self.stop_if_signalled(signals, partial(save, "last.pt"), iteration)
                step_start = time.perf_counter()
        if not metrics:  # resumed at max_iters: evaluate what was loaded
            metrics, _ = evaluate(model, val_loader, len(info.class_names), self.device,
                                  info.ignore_index, precision=self.precision)
        return {
            **metrics,
            "best_mIoU": max(best_miou, metrics["mIoU"]),
            "iterations": iteration,
            "nonfinite_losses": nonfinite,
            "train_images_per_s": train_images / max(train_seconds, 1e-9),  # 0 when none
            "wall_s": time.perf_counter() - start,
        }

    def due(self, iteration: int, every: int) -> bool:
        """Whether a task done every ``every`` iterations (and at the end) is due now."""
        return iteration % every == 0 or iteration == self.max_iters

    def training_state(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                       scheduler: LRScheduler) -> dict:
        """What a checkpoint holds of the training itself, beside the loop's position."""
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else {}, "rng": rng_state()}

    def save(self, path: Path, state: Callable[[], dict]) -> Path:
        """Rank 0 writes ``state()``; the others wait, so that no rank runs ahead of a save."""
        if self.group.is_main:
            save_checkpoint(path, state())
        barrier()
        return path

    @property
    def shows_progress(self) -> bool:
        return self.progress and self.group.is_main

    def restore(self, state: dict | None, model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: LRScheduler) -> tuple[int, int, int, float, bool]:
        """Load a checkpoint's training state (None: a fresh start); return (iteration,
        epoch, batches of the epoch done, best mIoU, whether an evaluation is pending)."""
        if state is None:
            return 0, 0, 0, -1.0, False
        load_model_state(model, state["model"], state["path"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if "rng" in state:
            set_rng_state(state["rng"])
        log.info("resumed from %s at iteration %d", state["path"], state["iteration"])
        return (state["iteration"], state["epoch"], state.get("epoch_batches", 0),
                state["best_miou"], state.get("pending_evaluation", False))

    def stop_if_signalled(self, signals: StopSignals, save: Callable[[], Path],
                          iteration: int) -> None:
        """After a stop signal (on any process): save, hand the signal on, and raise."""
        if self.agree(signals.received is not None):
            path = save()
            signals.forward()
            raise TrainingInterrupted(signals.received or signal.SIGTERM, iteration, path)

    def count_nonfinite(self, loss_value: float, iteration: int, checkpoints: Path) -> int:
        """1 for a NaN or Inf loss, else 0. ``on_nan=stop`` raises instead, naming where
        the last good checkpoint is; ``skip`` warns (the step was not applied)."""
        if math.isfinite(loss_value):
            return 0
        if self.on_nan == "stop":
            raise FloatingPointError(
                f"loss is {loss_value} at iteration {iteration}; the last good checkpoint is "
                f"kept in {checkpoints}: lower optimizer.lr, set trainer.grad_clip, or "
                "trainer.on_nan=skip to leave such batches out"
            )
        log.warning("loss is %s at iteration %d: batch skipped (trainer.on_nan=skip)",
                    loss_value, iteration)
        return 1

    def prepare(self, model: nn.Module) -> nn.Module:
        """What the training steps call: ``model``, with SyncBatchNorm, wrapped in
        DistributedDataParallel when distributed, compiled when asked. ``model`` itself
        stays the plain module that evaluation and checkpoints use."""
        net = model
        if self.group.distributed:
            if self.sync_bn and self.device.type == "cuda":
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            elif self.sync_bn:
                log.warning("trainer.sync_bn needs CUDA (PyTorch's SyncBatchNorm): batch-norm "
                            "statistics stay per process")
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(net, device_ids=device_ids)
        if self.compile:
            net = torch.compile(net)
        return net

    def agree(self, flag: bool) -> bool:
        """True on every process when it is true on any (a stop signal, a bad loss): all
        ranks must take the same branch, or the next collective hangs."""
        if not self.group.distributed:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        return bool(all_reduce_sum(value).item() > 0)

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
            _, _, batch = next(batches)
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
        """One optimisation step on ``batch``; returns the loss. A non-finite loss (on any
        process) is not applied, so the weights stay those of the last good step.
        ``criterion(output, targets, ignore_index)`` defaults to per-pixel cross-entropy."""
        images = batch["image"].to(self.device, non_blocking=True,
                                   memory_format=self.memory_format)
        targets = batch["mask"].to(self.device, non_blocking=True)
        with autocast(self.device, self.precision):
            loss = criterion(model(images), targets, ignore_index)
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(optimizer)
        else:
            loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
        loss_value = loss.item()
        if self.agree(not math.isfinite(loss_value)):
            if self.scaler is not None:
                self.scaler.update()
            return loss_value if not math.isfinite(loss_value) else float("nan")
        if self.scaler is not None:
            self.scaler.step(optimizer)  # skips steps whose fp16 gradients overflowed
            self.scaler.update()
        else:
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
