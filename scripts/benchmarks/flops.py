"""FLOP and MFU accounting: the FLOPs of one training step, counted by
``torch.utils.flop_counter.FlopCounterMode``, and what a rate of them is of a GPU's dense
bf16 peak (model FLOPs utilisation)."""

from __future__ import annotations

import torch

from .reference import reference_criterion

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, by a substring of the device name.
PEAK_BF16_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L40S": 362e12}


def peak_bf16_flops(device_name: str) -> float | None:
    """The dense bf16 peak FLOP/s of a GPU by its name; None for one not in the table."""
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in device_name), None)


def step_flops(model: torch.nn.Module, batch: dict, device: torch.device, precision: str,
               memory_format: torch.memory_format = torch.channels_last) -> float:
    """FLOPs of one training step's forward and backward of ``model`` on ``batch``, counted
    by FlopCounterMode (convolutions and matrix products) at ``precision``."""
    from torch.utils.flop_counter import FlopCounterMode

    from seg.engine.precision import autocast

    model.train()
    images = batch["image"].to(device, memory_format=memory_format)
    target = batch["mask"].to(device)
    with FlopCounterMode(display=False) as counter:
        with autocast(device, precision):
            loss = reference_criterion(model(images), target)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def utilisation(flops_per_image: float, images_per_s: float, device_type: str,
                device_name: str) -> tuple[float, float | None]:
    """Achieved TFLOP/s at ``images_per_s``, and the MFU: None on the CPU and where the
    GPU's peak is unknown."""
    achieved = flops_per_image * images_per_s
    peak = peak_bf16_flops(device_name) if device_type == "cuda" else None
    return achieved / 1e12, None if peak is None else achieved / peak
