"""Encoder pretraining for the upsampling study: segmentation at each tap's own stride,
so that no upsampler takes part in (and none is favoured by) the shared encoder. It is a
run like any other (``Trainer.fit``: checkpoints, resume, stop signals), without val
data; seg.cli.pretrain assembles it."""

from __future__ import annotations

import signal
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from seg.data.labels import IGNORE_INDEX
from seg.engine import RunInfo, RunParts, TrainingInterrupted
from seg.engine.tensorboard import NullLogger, TensorBoardLogger
from seg.models.encoders import Encoder
from seg.models.normalise import IMAGENET_MEAN, IMAGENET_STD, Normalise

FCN8S_TAPS = 3  # the study's decoder; the stride-4 tap gets no head


class NativeStrideClassifier(nn.Module):
    """An encoder with a 1x1 classifier on each tap FCN-8s fuses (strides 8, 16, 32),
    scored at the tap's own stride.

    It trains an encoder for segmentation without any upsampling: the labels are
    brought down to each tap's size (nearest) instead of the scores up. The upsampling
    study starts every run from such an encoder, so no upsampler is favoured by it.
    """

    def __init__(self, encoder: Encoder, num_classes: int,
                 normalise: Normalise | None = None) -> None:
        super().__init__()
        # the images as decoded, normalised as the segmentation model normalises them
        self.normalise = normalise if normalise is not None else Normalise(IMAGENET_MEAN,
                                                                           IMAGENET_STD)
        self.encoder = encoder
        channels = encoder.channels[-FCN8S_TAPS:]
        self.heads = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in channels)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Scores ``(B, K, H/s, W/s)`` for each tap stride ``s``."""
        taps = self.encoder(self.normalise(images))[-FCN8S_TAPS:]
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


def pretraining_parts(classifier: NativeStrideClassifier, optimizer: torch.optim.Optimizer,
                      scheduler: LRScheduler, loader: Iterable[dict], info: RunInfo,
                      logger: TensorBoardLogger | NullLogger) -> RunParts:
    """A pretraining as the run ``Trainer.fit`` trains: the classifier and its loss, no
    val data (it only checkpoints), the dataset's classes in its checkpoints."""
    return RunParts(classifier, optimizer, scheduler, loader, None, info,
                    criterion=classifier.loss, logger=logger)


class PretrainingStopped(TrainingInterrupted):
    """A stop signal stopped the pretraining; where it stood was saved just before."""

    def __init__(self, signum: int, iteration: int) -> None:
        self.signum = signum
        Exception.__init__(self, f"pretraining stopped by {signal.Signals(signum).name} at "
                           f"iteration {iteration}, saved: the same command again goes on "
                           "from there")
