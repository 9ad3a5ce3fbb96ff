"""What each configuration costs to use: the milliseconds of one forward pass of a
512 x 512 image, on the CPU and on CUDA when the machine has it.

The evaluations' ``inference_ms_per_image`` are timed at the training crop, in the
run's precision, on whatever device trained it; this times every configuration alike:
the lowest seed's trained model, batch 1, fp32, eval mode under ``torch.inference_mode``,
one warm-up pass (first-call allocations and kernel choice) and the median of five.

On the CPU it runs on one thread: with two, on this project's shared 2-core machine, the
same model's median swung from 32 to 1,332 ms as other processes took a core (each pass
waits for its slowest thread), where one thread's stayed within a few ms. One thread's
milliseconds are the cost that compares configurations; all cores' would not repeat.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import nn

from seg.engine.device import synchronize
from seg.stored import load_trained, model_from_checkpoint
from seg.study.runs import lowest_seed_checkpoints
from seg.study.stats import configuration_order

IMAGE_SIZE = 512
WARM_UP = 1
REPEATS = 5
CPU_THREADS = 1


def forward_ms(model: nn.Module, device: torch.device, size: int = IMAGE_SIZE,
               repeats: int = REPEATS) -> float:
    """Median milliseconds of ``model``'s forward pass of one ``size``-square image on
    ``device`` (where ``model`` already is), in fp32, after a warm-up pass."""
    image = torch.randn(1, 3, size, size, device=device)
    seconds = []
    with torch.inference_mode():
        for index in range(WARM_UP + repeats):
            synchronize(device)  # CUDA runs asynchronously: time the work, not its launch
            start = time.perf_counter()
            model(image)
            synchronize(device)
            if index >= WARM_UP:
                seconds.append(time.perf_counter() - start)
    return 1000 * statistics.median(seconds)


def cost_devices() -> list[torch.device]:
    """The CPU, and the first CUDA GPU where there is one."""
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def inference_costs(runs: list[dict], devices: list[torch.device] | None = None
                    ) -> list[dict]:
    """Per (decoder, upsampler) with a checkpoint, :func:`forward_ms` of its lowest seed's
    trained model on each device: rows ``{decoder, upsampler, cpu, cuda}`` (ms;
    a device not measured is left out)."""
    devices = cost_devices() if devices is None else devices
    checkpoints = lowest_seed_checkpoints(runs)
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(CPU_THREADS)
    try:
        for decoder, upsampler in sorted(checkpoints, key=lambda c: configuration_order(*c)):
            model = trained_model(checkpoints[decoder, upsampler])
            row = {"decoder": decoder, "upsampler": upsampler}
            for device in devices:
                row[device.type] = forward_ms(model.to(device), device)
            rows.append(row)
    finally:
        torch.set_num_threads(threads)  # the caller's setting, for whatever runs next
    if any(device.type == "cuda" for device in devices):
        torch.cuda.empty_cache()
    return rows


def trained_model(checkpoint: Path) -> nn.Module:
    """The checkpoint's model in eval mode, in fp32 (as trained with ``precision=32``)."""
    model = model_from_checkpoint(load_trained(checkpoint), checkpoint)
    return model.float().eval()
