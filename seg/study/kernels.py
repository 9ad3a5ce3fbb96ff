"""What the learned upsamplers became: their kernels and how far they drifted from the
bilinear kernel they started as, logged to TensorBoard after each evaluation."""

from __future__ import annotations

import torch
from torch import nn

from seg.engine.hooks import Hook
from seg.engine.tensorboard import TensorBoardLogger
from seg.models.upsamplers import kernel_drift


class UpsamplerKernels(Hook):
    """For each learned transposed-convolution step of ``model`` (0 = coarsest): its
    kernels as an image and their drift from the initial kernel."""

    def __init__(self, logger: TensorBoardLogger, model: nn.Module) -> None:
        self.logger, self.model = logger, model

    def after_evaluation(self, iteration: int, metrics: dict,
                         shown: dict[str, torch.Tensor]) -> None:
        steps = self.model.upsamplers() if hasattr(self.model, "upsamplers") else []
        for index, upsampler in enumerate(steps):
            drift = kernel_drift(upsampler)
            if drift is None or not upsampler.weight.requires_grad:
                continue
            self.logger.log_scalars({f"upsampler/{index}_kernel_drift": drift}, iteration)
            self.logger.log_kernels(f"upsampler/{index}_kernels", upsampler.weight, iteration)
