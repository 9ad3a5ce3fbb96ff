"""The poly learning-rate schedule of FCN and DeepLab, with linear warmup."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LRScheduler


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
