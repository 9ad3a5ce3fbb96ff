"""What learned kernels became: after each evaluation, every upsampling step of the model
that remembers the kernel it started from (an ``initial_weight``: the transposed
convolution, resize-conv, pixel shuffle) logs its kernels as an image and how far
learning moved them from that start (seg.models.upsamplers.kernel_drift) to TensorBoard.
Steps without one (bilinear, the content-aware upsamplers) and frozen ones log nothing."""

from __future__ import annotations

import torch
from torch import nn

from seg.engine.hooks import Hook
from seg.engine.tensorboard import TensorBoardLogger
from seg.models.upsamplers import kernel_drift


class LearnedKernels(Hook):
    """For each learned upsampling step of ``model`` (``model.upsamplers()``, 0 = the
    coarsest) with an ``initial_weight``: ``upsampler/<i>_kernels``, its kernels as an
    image, and ``upsampler/<i>_kernel_drift``, ``||W - W0|| / ||W0||``."""

    def __init__(self, logger: TensorBoardLogger, model: nn.Module) -> None:
        self.logger, self.model = logger, model

    def after_evaluation(self, iteration: int, metrics: dict,
                         shown: dict[str, torch.Tensor]) -> None:
        steps = self.model.upsamplers() if hasattr(self.model, "upsamplers") else []
        for index, step in enumerate(steps):
            drift = kernel_drift(step)  # None: no initial_weight
            if drift is None or not step.weight.requires_grad:
                continue
            self.logger.log_scalars({f"upsampler/{index}_kernel_drift": drift}, iteration)
            self.logger.log_kernels(f"upsampler/{index}_kernels", step.weight, iteration)
