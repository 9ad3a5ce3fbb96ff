"""Encoder pretraining for the upsampling study: segmentation at each tap's own stride,
so that no upsampler takes part in (and none is favoured by) the shared encoder."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from seg.data.base import IGNORE_INDEX
from seg.engine import LossWindow, Trainer, TrainingState
from seg.engine.batches import endless
from seg.engine.signals import StopSignals, TrainingInterrupted
from seg.engine.tensorboard import TensorBoardLogger
from seg.errors import NonFiniteLoss
from seg.models.encoders import Encoder

log = logging.getLogger(__name__)
FCN8S_TAPS = 3  # the study's decoder; the stride-4 tap gets no head


class NativeStrideClassifier(nn.Module):
    """An encoder with a 1x1 classifier on each tap FCN-8s fuses (strides 8, 16, 32),
    scored at the tap's own stride.

    It trains an encoder for segmentation without any upsampling: the labels are
    brought down to each tap's size (nearest) instead of the scores up. The upsampling
    study starts every run from such an encoder, so no upsampler is favoured by it.
    """

    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        channels = encoder.channels[-FCN8S_TAPS:]
        self.heads = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in channels)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Scores ``(B, K, H/s, W/s)`` for each tap stride ``s``."""
        taps = self.encoder(images)[-FCN8S_TAPS:]
        return [head(tap) for head, tap in zip(self.heads, taps, strict=True)]

    @staticmethod
    def loss(scores: list[torch.Tensor], targets: torch.Tensor, ignore_index: int = IGNORE_INDEX
             ) -> torch.Tensor:
        """Mean over taps of the cross-entropy against nearest-downsampled labels."""
        losses = []
        for tap_scores in scores:
            labels = F.interpolate(targets[:, None].float(), size=tap_scores.shape[-2:],
                                   mode="nearest")[:, 0].long()  # (B, H/s, W/s)
            losses.append(F.cross_entropy(tap_scores, labels, ignore_index=ignore_index))
        return torch.stack(losses).mean()


def pretrain(
    trainer: Trainer,
    classifier: NativeStrideClassifier,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    loader: DataLoader,
    iterations: int,
    logger: TensorBoardLogger,
    ignore_index: int = IGNORE_INDEX,
    state: TrainingState | None = None,
    checkpoint: Callable[[TrainingState], object] | None = None,
    checkpoint_every: int = 1000,
) -> float:
    """Train ``classifier`` with ``trainer``'s steps (device, precision, clipping) up to
    ``iterations`` steps, from where ``state`` stands (a stopped pretraining's position,
    restored with its weights; a fresh start by default); return the mean loss of its last
    ``log_every`` steps. Every ``checkpoint_every`` iterations before the last,
    ``checkpoint(state)`` saves where it stands, right after the losses were read (a
    non-finite one stops it before it is saved). A stop signal (SIGTERM, Ctrl-C) saves
    too, after the step under way, and stops (:class:`PretrainingStopped`): started
    again, it goes on from that very iteration."""
    state = state if state is not None else TrainingState()
    classifier.to(trainer.device, memory_format=trainer.memory_format).train()
    batches = endless(loader, state.epoch, state.epoch_batches)
    losses, mean_loss = LossWindow(trainer.device), float("nan")
    with StopSignals() as signals:
        for iteration in range(state.iteration + 1, iterations + 1):
            state.epoch, state.epoch_batches, batch = next(batches)
            loss, skipped = trainer.train_step(classifier, optimizer, batch, ignore_index,
                                               criterion=classifier.loss)
            losses.add(loss, skipped, iteration)
            scheduler.step()
            state.iteration = iteration
            stopping = signals.received is not None and checkpoint is not None
            saving = stopping or (checkpoint is not None and iteration % checkpoint_every == 0
                                  and iteration < iterations)
            if iteration % trainer.log_every == 0 or iteration == iterations or saving:
                # the loss stays on the device until it is logged
                mean_loss = logged_loss(losses, logger, optimizer, iteration)
                if iteration % (10 * trainer.log_every) == 0:
                    log.info("pretraining iteration %d/%d: loss %.4f", iteration, iterations,
                             mean_loss)
            if saving:
                checkpoint(state)
            if stopping:
                signals.forward()
                raise PretrainingStopped(signals.received, iteration)
    return mean_loss


class PretrainingStopped(TrainingInterrupted):
    """A stop signal stopped the pretraining; where it stood was saved just before."""

    def __init__(self, signum: int, iteration: int) -> None:
        self.signum = signum
        Exception.__init__(self, f"pretraining stopped by {signal.Signals(signum).name} at "
                           f"iteration {iteration}, saved: the same command again goes on "
                           "from there")


def logged_loss(losses: LossWindow, logger: TensorBoardLogger,
                optimizer: torch.optim.Optimizer, iteration: int) -> float:
    """The mean loss since the last read, logged with the rate; a non-finite one stops
    the pretraining (:class:`NonFiniteLoss`)."""
    mean_loss, nonfinite, first = losses.read()
    if nonfinite:
        raise NonFiniteLoss(f"pretraining loss is not finite at iteration {first}: "
                            "lower pretrain.lr")
    logger.log_scalars({"pretrain/loss": mean_loss,
                        "pretrain/lr": optimizer.param_groups[0]["lr"]}, iteration)
    return mean_loss
