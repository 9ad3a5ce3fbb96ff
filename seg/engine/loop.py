"""The training loop: iteration-based, with periodic evaluation, checkpoints and exact
resume, on one process or many."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from seg.engine.batches import endless
from seg.engine.checkpoints import (
    Checkpointer,
    RunInfo,
    check_checkpoint_format,
    load_checkpoint,
    load_model_state,
)
from seg.engine.device import resolve_device, use_fast_kernels
from seg.engine.distributed import ProcessGroup, all_reduce_sum, broadcast_from_main, process_device
from seg.engine.evaluation import Evaluator
from seg.engine.hooks import Hook, Progress, Step, TensorBoardScalars
from seg.engine.losses import cross_entropy
from seg.engine.parts import RunParts
from seg.engine.precision import (
    autocast,
    keep_depthwise_in_fp32,
    precision_reason,
    resolve_precision,
)
from seg.engine.resume import (
    earlier_run_problem,
    newer_last_checkpoint,
    refuse_changed_settings,
    resume_path,
    rewind_message,
)
from seg.engine.signals import StopSignals, TrainingInterrupted
from seg.engine.state import TrainingState
from seg.engine.threads import ThreadPolicy, fixed_threads_reason
from seg.errors import BadValue, NonFiniteLoss, PathExists
from seg.settings import is_int, one_of, positive_int, positive_number

log = logging.getLogger(__name__)


@dataclass
class Throughput:
    """Training speed, counted over the steps alone (evaluations and saves left out), and
    how many steps had a non-finite loss."""

    seconds: float = 0.0
    images: int = 0
    nonfinite: int = 0
    created: float = field(default_factory=time.perf_counter)
    started: float = field(default_factory=time.perf_counter)

    def restart(self) -> None:
        self.started = time.perf_counter()

    def add(self, images: int) -> float:
        """Count a step of ``images`` that began at the last restart; images/s so far."""
        self.seconds += time.perf_counter() - self.started
        self.images += images
        return self.images_per_s

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)  # 0 when none


class LossWindow:
    """The training loss since the last read, kept on the device: the sum and count of the
    finite losses, how many were not finite and the iteration of the first of those. Adding
    a step costs a few device ops and no wait for the host; :meth:`read` waits once."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.clear()

    def clear(self) -> None:
        zero = torch.zeros((), device=self.device)
        self.finite_sum, self.finite_count, self.nonfinite = zero, zero.clone(), zero.clone()
        self.first_nonfinite = torch.full((), -1.0, device=self.device)

    def add(self, loss: torch.Tensor, skipped: torch.Tensor, iteration: int) -> None:
        """Count the step ``iteration``'s ``loss``; ``skipped``: its update was left out."""
        loss = loss.detach().float()
        self.finite_sum = self.finite_sum + torch.where(skipped, 0.0, loss)
        self.finite_count = self.finite_count + (~skipped).float()
        self.first_nonfinite = torch.where(skipped & (self.nonfinite == 0), float(iteration),
                                           self.first_nonfinite)
        self.nonfinite = self.nonfinite + skipped.float()

    def read(self) -> tuple[float, int, int | None]:
        """``(mean finite loss, non-finite count, first non-finite iteration or None)``
        since the last read (NaN mean when none was finite), and a fresh window. One wait
        for the device; the other read-backs find their values ready."""
        nonfinite = int(self.nonfinite.item())  # the wait; what follows is ready
        mean_loss = (self.finite_sum / self.finite_count).item()  # NaN when the count is 0
        first = int(self.first_nonfinite.item()) if nonfinite else None
        self.clear()
        return mean_loss, nonfinite, first


@dataclass
class Run:
    """One call of ``Trainer.fit``: what is trained, where it stands, where it is saved and
    who is told what happened."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    scaler: torch.amp.GradScaler | None
    info: RunInfo
    state: TrainingState
    checkpoints: Checkpointer
    evaluate: Callable[[], tuple[dict, dict]] | None  # None: a run without val data
    hooks: list[Hook]

    def save(self, name: str, pending_evaluation: bool = False) -> Path:
        """Save the whole training state as ``name``; ``pending_evaluation`` marks a save
        made just before an evaluation (see ``Trainer.evaluate_and_save``)."""
        self.state.pending_evaluation = pending_evaluation
        return self.checkpoints.save(name, lambda: {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            **self.state.state_dict(), **asdict(self.info),
        })


def kept_checkpoint(run: Run) -> str:
    """Where the last good checkpoint of a stopped run is, or that there is none yet."""
    last = run.checkpoints.folder / "last.pt"
    if last.is_file():
        return f"the last good checkpoint is kept: {last}"
    return "no checkpoint was saved before it (nothing to resume)"


class Trainer:
    """Iteration-based training with periodic evaluation, checkpoints and exact resume,
    on one process or many (see :meth:`join`).

    ``resume`` is false, true (this run folder's ``checkpoints/last.pt``), ``auto`` (that
    file if it exists, else a fresh start: what a requeued job wants) or a path to a
    checkpoint file or a run folder. ``precision`` is 32, bf16, 16 (CUDA, with gradient
    scaling) or auto; ``on_nan`` is ``stop`` (keep the last good checkpoint and say where)
    or ``skip`` (leave the batch out and go on). It evaluates every ``eval_every``
    iterations, at the end, and where a hook asks (``Hook.wants_evaluation``: the study's
    learning curve); each evaluation lands in metrics.json's ``history``. ``threads``:
    this process's CPU threads; ``auto`` (on the CPU) one per core no other process keeps
    busy, read again as the run goes (seg.engine.threads); None leaves torch's default.
    ``epochs``: the budget in passes over the training split instead (see
    seg.training.budget_from_epochs).
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
        threads: int | str | None = "auto",
        rewind: bool = False,
        epochs: float | None = None,
    ) -> None:
        one_of(on_nan, "trainer.on_nan", ("stop", "skip"))
        self.max_iters = positive_int(max_iters, "trainer.max_iters")
        # passes over the training split; when set, the run (seg.training) turns it into
        # max_iters from the split's size, before anything is built from max_iters
        self.epochs = positive_number(epochs, "trainer.epochs", allow_none=True)
        self.eval_every = positive_int(eval_every, "trainer.eval_every")
        self.device = resolve_device(device, "trainer.device")
        self.deterministic = deterministic
        if threads != "auto" and not (threads is None or is_int(threads) and threads >= 1):
            raise BadValue(f"trainer.threads must be auto, a positive integer or null, "
                           f"got {threads!r}")
        self.threads = threads
        self.thread_policy: ThreadPolicy | None = None
        self.resume = resume
        self.rewind = rewind
        self.kept_before_first_save: dict[str, str] = {}
        self.grad_clip = positive_number(grad_clip, "trainer.grad_clip", allow_none=True)
        self.log_every = positive_int(log_every, "trainer.log_every")
        self.progress = progress
        # NHWC convolutions are faster on CPUs (oneDNN) and tensor cores alike.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.precision = resolve_precision(precision, self.device)
        self.precision_reason = precision_reason(precision, self.precision, self.device)
        self.compile = compile
        self.sync_bn = sync_bn
        self.checkpoint_every = positive_int(checkpoint_every, "trainer.checkpoint_every",
                                             allow_none=True) or eval_every
        self.on_nan = on_nan
        self.group = ProcessGroup()
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "16" else None

    def apply_process_settings(self) -> None:
        """What this trainer sets for the whole process, done when a run starts (not when
        a Trainer is built, which a benchmark or a test may do for its settings alone):
        cuDNN autotuning and TF32 on CUDA unless ``deterministic``, and ``threads`` (a
        fixed count; ``auto`` is chosen when the run starts, :meth:`choose_threads`)."""
        use_fast_kernels(self.device, self.deterministic)
        if isinstance(self.threads, int):
            torch.set_num_threads(self.threads)  # runs side by side share the cores, not fight

    def choose_threads(self) -> None:
        """On the CPU, say how many threads the run uses and why; with ``auto`` (and no
        OMP_NUM_THREADS), choose them from the load and keep following it."""
        if self.device.type != "cpu" or self.threads is None:
            return
        fixed = fixed_threads_reason(None if self.threads == "auto" else self.threads)
        if fixed is None:
            self.thread_policy = ThreadPolicy()
        line = fixed or self.thread_policy.start()
        if self.group.is_main:
            log.info(line)

    def follow_load(self) -> None:
        """After a step: fewer threads when other processes take cores, more when
        they leave (a no-op between two of ThreadPolicy's readings)."""
        line = self.thread_policy.check() if self.thread_policy is not None else None
        if line and self.group.is_main:
            log.info(line)

    def join(self, group: ProcessGroup) -> None:
        """Train as one of ``group``'s processes (each on its own GPU when on CUDA)."""
        self.group = group
        self.device = process_device(self.device, group)

    def resume_state(self, run_dir: Path, config: dict | None = None) -> dict | None:
        """The checkpoint to resume from (see ``resume``), or None for a fresh start.
        Refused: a run folder that holds another run (nothing replaces it), a checkpoint
        older than the folder's last.pt unless ``rewind`` (which keeps that last.pt as
        ``last_iteration_N.pt``, or ``last_iteration_N_2.pt``... where that name is taken),
        and a ``config`` that changes what the checkpoint decides
        (seg.engine.resume.FROM_CHECKPOINT)."""
        path = resume_path(self.resume, Path(run_dir))
        # rank 0 looks before any rank writes, and every rank gets its answer
        problem = broadcast_from_main(
            earlier_run_problem(Path(run_dir), path, restart=self.resume == "auto")
            if self.group.is_main else None)
        if problem:
            raise PathExists(problem)
        if path is None:
            return None
        state = load_checkpoint(path)
        check_checkpoint_format(state, path)
        state["path"] = str(path)
        if config is not None:
            refuse_changed_settings(state, config)
        newest = newer_last_checkpoint(Path(run_dir), state)
        if newest is not None and not self.rewind:
            raise PathExists(rewind_message(Path(run_dir), state, newest))
        if newest is not None:  # moved aside when the rewound run first saves, under a
            # name of its own: an earlier rewind's last_iteration_N.pt is kept as well
            self.kept_before_first_save["last.pt"] = f"last_iteration_{newest}.pt"
        return state

    def fit(self, parts: RunParts, run_dir: Path, resume_from: dict | None = None) -> dict:
        """Train ``parts`` to ``max_iters`` in ``run_dir``, continuing ``resume_from`` (a
        checkpoint, :meth:`resume_state`) when given; return the final evaluation's
        metrics (also in metrics.json), or with no ``val_data`` the run's totals alone.
        ``parts.hooks`` are called after each step and evaluation, after the TensorBoard
        logging of ``parts.logger``."""
        self.apply_process_settings()
        self.choose_threads()
        run = self.start(parts, Path(run_dir), resume_from)
        optimizer, scheduler = parts.optimizer, parts.scheduler
        state, net = run.state, self.prepare(parts.model)
        metrics = self.evaluate_and_save(run) if state.pending_evaluation else {}
        throughput, losses = Throughput(), LossWindow(self.device)
        first_iteration = state.iteration + 1
        with StopSignals() as signals, Progress(self.group.is_main, self.progress,
                                                self.log_every, self.max_iters,
                                                state.iteration) as progress:
            batches = endless(parts.train_data, state.epoch, state.epoch_batches)
            while state.iteration < self.max_iters:
                state.epoch, state.epoch_batches, batch = next(batches)
                loss, skipped = self.train_step(net, optimizer, batch, parts.info.ignore_index,
                                                parts.criterion)
                scheduler.step()
                state.iteration += 1
                losses.add(loss, skipped, state.iteration)
                images_per_s = throughput.add(len(batch["mask"]) * self.group.world_size)
                evaluation_due = self.evaluation_due(run)
                save_due = (evaluation_due or state.iteration % self.checkpoint_every == 0
                            or state.iteration == self.max_iters)
                # the loss is read (the one wait for the device) only where it is logged,
                # before a save (which must not keep a run the NaN policy stops) and after
                # the first step, which reads its skip flag back (see apply_update)
                read_due = (save_due or state.iteration % self.log_every == 0
                            or state.iteration == first_iteration)
                mean_loss = self.read_loss(losses, throughput, run) if read_due else None
                step = Step(state.iteration, self.max_iters, mean_loss,
                            optimizer.param_groups[0]["lr"], images_per_s)
                for hook in (progress, *run.hooks):
                    hook.after_step(step)
                if evaluation_due:
                    metrics = self.evaluate_and_save(run)
                elif save_due:
                    run.save("last.pt")
                self.stop_if_signalled(signals, run, read_due)
                self.follow_load()
                throughput.restart()
        if not metrics and run.evaluate is not None:
            metrics = run.evaluate()[0]
        return self.summary(metrics, state, throughput)

    def evaluation_due(self, run: Run) -> bool:
        """Whether to evaluate after this step: every ``eval_every``, where a hook asks, and
        at the end; never in a run without val data."""
        iteration = run.state.iteration
        return run.evaluate is not None and (
            iteration % self.eval_every == 0 or iteration == self.max_iters
            or any(hook.wants_evaluation(iteration, self.max_iters) for hook in run.hooks))

    def start(self, parts: RunParts, run_dir: Path, resume_from: dict | None) -> Run:
        """The run, with the model on its device and, when resuming, the state restored."""
        model, info = parts.model, parts.info
        self.place(model)
        evaluate = None
        if parts.val_data is not None:
            # in fp32 whatever the steps run in, as seg-eval (and torchvision's and
            # mmsegmentation's evaluations) do: one number per checkpoint
            evaluator = Evaluator(len(info.class_names), self.device, info.ignore_index)
            evaluate = partial(evaluator, model, parts.val_data)
        hooks = [TensorBoardScalars(parts.logger, info, self.log_every), *parts.hooks]
        run = Run(model, parts.optimizer, parts.scheduler, self.scaler, info, TrainingState(),
                  Checkpointer(run_dir / "checkpoints", self.group.is_main,
                               self.kept_before_first_save), evaluate, hooks)
        if resume_from is not None:
            self.restore(run, resume_from)
        return run

    def place(self, model: nn.Module) -> None:
        """``model`` on the device, in the memory format and layer precisions it trains in."""
        model.to(self.device, memory_format=self.memory_format).train()
        if self.device.type == "cpu" and self.precision == "bf16":
            kept = keep_depthwise_in_fp32(model)
            if kept:
                log.info("bf16 on the CPU: %d depthwise convolutions run in fp32 (their bf16 "
                         "backward is several times slower here)", kept)

    def restore(self, run: Run, checkpoint: dict) -> None:
        """Load a checkpoint's weights and training state into ``run``."""
        load_model_state(run.model, checkpoint["model"], checkpoint["path"])
        run.optimizer.load_state_dict(checkpoint["optimizer"])
        run.scheduler.load_state_dict(checkpoint["scheduler"])
        if run.scaler is not None and checkpoint.get("scaler"):
            run.scaler.load_state_dict(checkpoint["scaler"])
        run.state.load_state_dict(checkpoint)
        log.info("resumed from %s at iteration %d", checkpoint["path"], run.state.iteration)

    def evaluate_and_save(self, run: Run) -> dict:
        """Evaluate, tell the hooks, keep the best. last.pt is saved first (marked pending),
        so that an evaluation that fails (a bad val image) loses nothing trained, and a run
        resumed from it evaluates before it goes on."""
        state = run.state
        run.save("last.pt", pending_evaluation=True)
        metrics, shown = run.evaluate()
        state.record(metrics)
        for hook in run.hooks:
            hook.after_evaluation(state.iteration, metrics, shown)
        log.info("iteration %d: val mIoU %.4f, pixel acc %.4f", state.iteration,
                 metrics["mIoU"], metrics["pixel_acc"])
        if metrics["mIoU"] > state.best_miou:
            state.best_miou = metrics["mIoU"]
            run.save("best.pt")
        run.save("last.pt")
        return metrics

    def summary(self, metrics: dict, state: TrainingState, throughput: Throughput) -> dict:
        """The final evaluation's metrics (none in a run without val data) with the run's
        totals."""
        best = {"best_mIoU": max(state.best_miou, metrics["mIoU"])} if metrics else {}
        return {
            **metrics,
            **best,
            "iterations": state.iteration,
            "nonfinite_losses": throughput.nonfinite,
            "train_images_per_s": throughput.images_per_s,
            "wall_s": time.perf_counter() - throughput.created,
            "history": state.history,
        }

    def stop_if_signalled(self, signals: StopSignals, run: Run, at_read_point: bool) -> None:
        """After a stop signal (on any process): save, hand the signal on, and raise.
        Distributed, the processes agree (a collective and a read-back) only at read
        points, where the loss is read anyway; alone, the check costs nothing every step."""
        if self.group.distributed and not at_read_point:
            return
        if self.agree(signals.received is not None):
            path = run.save("last.pt")
            signals.forward()
            raise TrainingInterrupted(signals.received or signal.SIGTERM, run.state.iteration,
                                      path)

    def read_loss(self, losses: LossWindow, throughput: Throughput, run: Run) -> float:
        """The mean finite loss since the last read. A non-finite one among them:
        ``on_nan=stop`` raises, naming the first such iteration and where the last good
        checkpoint is; ``skip`` warns (those steps were not applied) and counts them."""
        mean_loss, nonfinite, first = losses.read()
        if not nonfinite:
            return mean_loss
        if self.on_nan == "stop":
            raise NonFiniteLoss(
                f"loss is not finite at iteration {first}; {kept_checkpoint(run)}: "
                "lower optimizer.lr, set trainer.grad_clip, or trainer.on_nan=skip to leave "
                "such batches out"
            )
        throughput.nonfinite += nonfinite
        log.warning("loss was not finite %d time(s), first at iteration %d: those batches "
                    "were skipped (trainer.on_nan=skip)", nonfinite, first)
        return mean_loss

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

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict, ignore_index: int,
        criterion: Callable[..., torch.Tensor] = cross_entropy,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step on ``batch``; returns the loss and whether the update was
        skipped, both on the device, with no wait for the host. A non-finite loss (or
        clipped gradient norm) on any process is not applied, so the weights stay those of
        the last good step. ``criterion(output, targets, ignore_index)`` is the loss."""
        images = batch["image"].to(self.device, non_blocking=True,
                                   memory_format=self.memory_format)
        targets = batch["mask"].to(self.device, non_blocking=True)
        # the forward pass updates batch-norm statistics whatever the loss turns out to be
        buffers = BufferSnapshot(model) if self.on_nan == "skip" else None
        with autocast(self.device, self.precision):
            loss = criterion(model(images), targets, ignore_index)
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(optimizer)
        else:
            loss.backward()
        skipped = ~torch.isfinite(loss.detach())
        if self.grad_clip:
            norm = nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
            skipped = skipped | ~torch.isfinite(norm)
        if self.group.distributed:  # every process skips, or none: the weights stay equal
            skipped = all_reduce_sum(skipped.float()) > 0
        self.apply_update(optimizer, skipped)
        if buffers is not None:
            buffers.restore_if(skipped)
        return loss.detach(), skipped

    def apply_update(self, optimizer: torch.optim.Optimizer, skipped: torch.Tensor) -> None:
        """``optimizer.step()`` unless ``skipped``, decided on the device where the
        optimizer can: fused optimizers take the flag as ``found_inf`` (the mechanism
        GradScaler uses) and their kernel leaves every tensor as it was. Others, and the
        first step (fused SGD fills its fresh momentum buffers only by stepping), read the
        flag back. fp16's GradScaler skips overflowing steps itself (its own read-back)."""
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        elif fused(optimizer) and optimizer.state:
            optimizer.found_inf = skipped.float()
            optimizer.step()
        elif not skipped.item():
            optimizer.step()


class BufferSnapshot:
    """A copy of a module's buffers (batch-norm running means, variances and batch
    counts), put back where a step turns out to be skipped: a skipped step changes
    nothing, its statistics included. Decided on the device (``torch.where``), with no
    wait for the host."""

    def __init__(self, model: nn.Module) -> None:
        self.buffers = list(model.buffers())
        self.saved = [buffer.detach().clone() for buffer in self.buffers]

    @torch.no_grad()
    def restore_if(self, skipped: torch.Tensor) -> None:
        for buffer, saved in zip(self.buffers, self.saved, strict=True):
            buffer.copy_(torch.where(skipped, saved, buffer))


def fused(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every parameter group of ``optimizer`` runs its fused kernel."""
    return all(group.get("fused") for group in optimizer.param_groups)
