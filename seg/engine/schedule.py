"""The poly learning-rate schedule of FCN and DeepLab, with linear warmup."""

from __future__ import annotations

import logging

import torch
from torch.optim.lr_scheduler import LRScheduler

from seg.errors import BadValue
from seg.settings import is_int, number_in, positive_int

log = logging.getLogger(__name__)

LONGEST_AUTO_WARMUP = 100  # iterations: the warmup of a full run (3200 iterations)


def resolve_warmup(warmup_iters: int | str, total_iters: int) -> int:
    """``warmup_iters``, where ``auto`` is a tenth of the run, at most 100 iterations: a
    fixed 100 would leave a 50-iteration run below its learning rate throughout."""
    if warmup_iters == "auto":
        return min(LONGEST_AUTO_WARMUP, positive_int(total_iters, "scheduler.total_iters") // 10)
    if not is_int(warmup_iters) or warmup_iters < 0:
        raise BadValue(f"scheduler.warmup_iters must be an integer >= 0 or auto, got "
                       f"{warmup_iters!r}")
    return warmup_iters


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
    """Poly learning-rate decay stepped once per iteration, with optional linear warmup
    over ``warmup_iters`` iterations (``auto``: see :func:`resolve_warmup`).

    Resumed (:meth:`load_state_dict`), it goes on at the checkpoint's iteration on the
    schedule the config gives now: a longer ``total_iters`` stretches the decay from
    there, and an ``auto`` warmup keeps the length the run resolved at its start (a
    tenth of a longer run would warm it up a second time)."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, total_iters: int, power: float = 0.9,
        warmup_iters: int | str = 0, warmup_ratio: float = 0.1,
    ) -> None:
        # checked here, not when the last iterations divide by them
        self.total_iters = positive_int(total_iters, "scheduler.total_iters")
        self.power = number_in(power, "scheduler.power", 0.0, float("inf"))
        self.warmup_auto = warmup_iters == "auto"
        self.warmup_iters = resolve_warmup(warmup_iters, total_iters)
        self.warmup_ratio = number_in(warmup_ratio, "scheduler.warmup_ratio", 0.0, 1.0)
        super().__init__(optimizer)

    def state_dict(self) -> dict:
        # The schedule's shape comes from the config, so a resumed run may extend it;
        # the warmup it resolved stays, for an auto warmup to keep (load_state_dict).
        state = super().state_dict()
        for key in ("total_iters", "power", "warmup_ratio", "warmup_auto"):
            state.pop(key, None)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Go on from a checkpoint's iteration on this config's schedule. The optimizer's
        learning rates, which its own state (loaded first, as ``Trainer.restore`` does) set
        to the old schedule's value (0 at the end of a finished run), become this
        schedule's: the first resumed iteration trains at the extended schedule's rate."""
        state = dict(state_dict)
        run_warmup = state.pop("warmup_iters", None)  # None: a checkpoint from before it
        super().load_state_dict(state)
        if self.warmup_auto and run_warmup is not None:
            self.warmup_iters = run_warmup  # resolved once, at the run's start
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr
        log.info("%s", self.resumed_line())

    def resumed_line(self) -> str:
        """What the resumed schedule does, e.g. ``resumed at iteration 300 of 600: warmup
        done, poly decay to 0 at 600``."""
        done, total = self.last_epoch, self.total_iters
        if done >= total:
            return f"resumed at iteration {done} of {total}: the schedule has ended (rate 0)"
        if self.warmup_iters == 0:
            warmup = "no warmup"
        elif done >= self.warmup_iters:
            warmup = "warmup done"
        else:
            warmup = f"warmup until iteration {self.warmup_iters}"
        return f"resumed at iteration {done} of {total}: {warmup}, poly decay to 0 at {total}"

    def get_lr(self) -> list[float]:
        factor = poly_factor(self.last_epoch, self.total_iters, self.power,
                             self.warmup_iters, self.warmup_ratio)
        return [base_lr * factor for base_lr in self.base_lrs]
