"""Stop signals: a checkpoint first, then the stop."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

log = logging.getLogger(__name__)

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR2")
                     if hasattr(signal, name))


class TrainingInterrupted(Exception):
    """A stop signal arrived; the last checkpoint was saved just before this was raised."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path) -> None:
        self.signum, self.iteration = signum, iteration
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
        # Python's Ctrl-C handler and seg's own start-up one (seg.cli.command) only stop
        # a command at once: the loop has saved and stops by itself
        if (callable(handler) and handler is not signal.default_int_handler
                and not getattr(handler, "only_before_training", False)):
            handler(self.received, None)

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
