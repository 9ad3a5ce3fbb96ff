"""The poly learning-rate schedule of FCN and DeepLab, with linear warmup."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LRScheduler

from seg.errors import BadValue
from seg.settings import is_int, number_in, positive_int

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
    over ``warmup_iters`` iterations (``auto``: see :func:`resolve_warmup`)."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, total_iters: int, power: float = 0.9,
        warmup_iters: int | str = 0, warmup_ratio: float = 0.1,
    ) -> None:
        # checked here, not when the last iterations divide by them
        self.total_iters = positive_int(total_iters, "scheduler.total_iters")
        self.power = number_in(power, "scheduler.power", 0.0, float("inf"))
        self.warmup_iters = resolve_warmup(warmup_iters, total_iters)
        self.warmup_ratio = number_in(warmup_ratio, "scheduler.warmup_ratio", 0.0, 1.0)
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
