"""What one training run is made of: the one value ``Trainer.fit`` takes besides where
to write. ``seg.training.build_run`` assembles it from a composed config; benchmarks and
tests build one the same way and replace a field (``dataclasses.replace``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from seg.engine.checkpoints import RunInfo
from seg.engine.hooks import Hook
from seg.engine.losses import cross_entropy
from seg.engine.tensorboard import NullLogger, TensorBoardLogger


@dataclass
class RunParts:
    """A run's model and how it learns (``optimizer``, ``scheduler``, ``criterion``), its
    data (``val_data`` None: a run that never evaluates, such as the study's encoder
    pretraining, which only checkpoints), what its checkpoints carry (``info``) and who
    is told what happens (``logger``; ``hooks``, called after the logger's own).
    ``criterion(output, targets, ignore_index)`` is the loss (seg.engine.losses)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    train_data: Iterable[dict]
    val_data: Iterable[dict] | None
    info: RunInfo
    criterion: Callable[..., torch.Tensor] = cross_entropy
    hooks: list[Hook] = field(default_factory=list)
    logger: TensorBoardLogger | NullLogger = field(default_factory=NullLogger)
