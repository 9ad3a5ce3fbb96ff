"""What each configuration costs to use: the milliseconds and the peak memory of one forward
pass of a 512 x 512 image, on the CPU and on CUDA when the machine has it, and the
parameters its upsamplers add.

The evaluations' ``inference_ms_per_image`` are timed at the training crop, in the
run's precision, on whatever device trained it; this times every configuration alike:
the lowest seed's trained model, batch 1, fp32, eval mode under ``torch.inference_mode``,
one warm-up pass (first-call allocations and kernel choice) and the median of five.

On the CPU it runs on one thread: with two, on this project's shared 2-core machine, the
same model's median swung from 32 to 1,332 ms as other processes took a core (each pass
waits for its slowest thread), where one thread's stayed within a few ms. One thread's
milliseconds are the cost that compares configurations; all cores' would not repeat.

Peak memory: the bytes allocated at the peak of a pass beyond those allocated before it
(the model and its input). CUDA counts them itself (``torch.cuda.max_memory_allocated``);
the CPU allocator keeps no count, so :class:`PeakMemory` adds up the storage of the tensors
the operators return while they are alive, which leaves out kernels' internal scratch.
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from seg.engine.device import synchronize
from seg.study.runs import lowest_seed_checkpoints
from seg.study.stats import configuration_order
from seg.trained.checkpoint import load_trained, model_from_checkpoint

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


class PeakMemory(TorchDispatchMode):
    """While on, ``peak``: the most bytes of tensor storage that its operators allocated
    and that were alive at once. A storage counts from the operator that returned it
    until it is freed; views and in-place results share their input's storage and add
    nothing. Works on any device (this project uses it where CUDA's count is missing)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        for storage in {id(s): s for s in output_storages(out)}.values():
            if id(storage) not in inputs:
                self.allocated(storage)
        return out

    def allocated(self, storage: torch.UntypedStorage) -> None:
        size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)
        # the storage's Python object lives as long as the storage does, tensors or not
        weakref.finalize(storage, self.freed, size)

    def freed(self, size: int) -> None:
        self.live -= size


def output_storages(out: object) -> list[torch.UntypedStorage]:
    return [t.untyped_storage() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]


def peak_bytes(run: Callable[[], object], device: torch.device) -> int:
    """Bytes allocated at the peak of ``run()`` beyond those allocated before it: on CUDA
    by the caching allocator's count, elsewhere by :class:`PeakMemory`."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with PeakMemory() as memory:
        run()
    return memory.peak


def forward_peak_bytes(model: nn.Module, device: torch.device, size: int = IMAGE_SIZE) -> int:
    """:func:`peak_bytes` of the pass :func:`forward_ms` times, after a warm-up pass (whose
    one-off allocations, such as cuDNN's workspaces, are no cost of an image)."""
    image = torch.randn(1, 3, size, size, device=device)
    with torch.inference_mode():
        model(image)
        return peak_bytes(lambda: model(image), device)


def cost_devices() -> list[torch.device]:
    """The CPU, and the first CUDA GPU where there is one."""
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def inference_costs(runs: list[dict], devices: list[torch.device] | None = None,
                    size: int = IMAGE_SIZE) -> list[dict]:
    """Per (decoder, upsampler) with a checkpoint, of its lowest seed's trained model:
    ``upsampler_parameters`` (the trainable ones of its upsampling steps) and, per device,
    :func:`forward_ms` (keys ``cpu``, ``cuda``) and :func:`forward_peak_bytes`
    (``cpu_peak_bytes``, ``cuda_peak_bytes``) of a ``size``-square image; a device not
    measured is left out."""
    devices = cost_devices() if devices is None else devices
    checkpoints = lowest_seed_checkpoints(runs)
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(CPU_THREADS)
    try:
        for decoder, upsampler in sorted(checkpoints, key=lambda c: configuration_order(*c)):
            model = trained_model(checkpoints[decoder, upsampler])
            row = {"decoder": decoder, "upsampler": upsampler,
                   "upsampler_parameters": model.upsampler_parameters()}
            for device in devices:
                row[device.type] = forward_ms(model.to(device), device, size)
                row[f"{device.type}_peak_bytes"] = forward_peak_bytes(model, device, size)
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
