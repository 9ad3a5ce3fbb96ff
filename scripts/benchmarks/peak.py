"""``peak``: how much of this machine's measured peak a training step uses, and where the
rest goes. The peak: a 3x3 convolution of 128 channels on 64x64, batch 8, channels_last,
at the precision ``trainer.precision=auto`` resolves to (bf16 where native), with every
core this process may use (forward; forward and backward beside it). For each model,
make train's recipe and compare=practice's U-Net on ``tf_efficientnet_lite0`` (random
init, bilinear steps, at the study's 112 px): the FLOPs of one training image (forward
and backward, FlopCounterMode), the step's images/s as ``Trainer.train_step`` runs it on
batches held in memory (the loader aside), and that rate's FLOP/s as a fraction of the
peak. Then, on the CPU, where one step's time goes by kind of op (each ATen op timed as it
runs: the CPU runs them one after another; the loss's forward counted apart), with the
loader's time per batch of make train's recipe beside it."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .audit import ours_loop
from .data import random_batches
from .flops import step_flops
from .harness import compose, device_name, timed_loop_images_per_second

MODELS = {  # name: the overrides of train.yaml, the crop the runs train at
    "make train": ((), 128),
    "practice U-Net": (("model/encoder=timm", "model.encoder.model_name=tf_efficientnet_lite0",
                        "model/decoder=unet", "model/upsampler=bilinear"), 112),
}
BATCH, WARMUP, STEPS, PROFILED = 8, 5, 20, 4
KIND_ORDER = ("convolution", "matmul", "normalization", "elementwise", "cast", "copy",
              "reduction", "loss", "optimizer", "view", "other")


def peak_flops(device: torch.device, precision: str, backward: bool = False) -> float:
    """FLOP/s of the peak's convolution (see the module's doc)."""
    dtype = torch.bfloat16 if precision == "bf16" else (
        torch.float16 if precision == "16" else torch.float32)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1, bias=False).to(device, dtype).to(
        memory_format=torch.channels_last)
    inputs = torch.randn(8, 128, 64, 64, device=device, dtype=dtype).to(
        memory_format=torch.channels_last).requires_grad_(backward)
    flops = 2 * 8 * 128 * 128 * 9 * 64 * 64 * (3 if backward else 1)

    def run() -> None:
        if backward:
            conv(inputs).sum().backward()
        else:
            with torch.no_grad():
                conv(inputs)

    return 10 * flops / seconds_of(run, device, warmup=3, repeats=10)


def seconds_of(run, device: torch.device, warmup: int, repeats: int) -> float:
    from seg.engine.device import synchronize

    for _ in range(warmup):
        run()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    synchronize(device)
    return time.perf_counter() - start


class TimedOps(TorchDispatchMode):
    """Milliseconds of the ATen ops run under it, by kind (``seg.engine.census`` kinds,
    casts told from copies); the ops between the model's output and the backward pass
    count as "loss". CPU only: there an op has finished when it returns."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.ms: Counter[str] = Counter()
        self.in_loss = False
        model.register_forward_pre_hook(lambda *_: setattr(self, "in_loss", False))
        model.register_forward_hook(lambda *_: setattr(self, "in_loss", True))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from seg.engine.census import copy_detail, kind_of

        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        elapsed = (time.perf_counter() - start) * 1e3
        if torch._C._current_graph_task_id() != -1:  # backward: the loss's forward is over
            self.in_loss = False
        kind = kind_of(func)
        if kind == "copy":
            kind = copy_detail(func, args, out)[0]
        self.ms["loss" if self.in_loss and kind != "optimizer" else kind] += elapsed
        return out


def profile(model: torch.nn.Module, step, batches: list) -> dict[str, float]:
    """Milliseconds per step by kind, over :data:`PROFILED` steps."""
    timed = TimedOps(model)
    with timed:
        for batch in batches[:PROFILED]:
            step(batch)
    return {kind: timed.ms[kind] / PROFILED for kind in KIND_ORDER if timed.ms[kind]}


def loader_ms(size: int) -> float:
    """Milliseconds per batch of make train's loader (its augmentations, one process),
    on a small shapes set generated for it, its cache warm (as after make train's first
    epoch)."""
    from seg.data.synthetic.shapes import generate_shapes
    from seg.engine.distributed import ProcessGroup
    from seg.training import training_loader

    with tempfile.TemporaryDirectory() as folder:
        # under 64 samples the generator works in this process: a pool forked after
        # torch's OpenMP threads started can hang
        root = generate_shapes(Path(folder) / "shapes", num_train=48, num_val=8)
        cfg = compose(f"dataset.root={root}", f"dataset.crop_size={size}")
        loader = training_loader(cfg, torch.device("cpu"), ProcessGroup())
        for _ in loader:  # the first epoch fills the cache
            pass
        start, count = time.perf_counter(), 0
        while count < 24:
            for _ in loader:
                count += 1
        return (time.perf_counter() - start) * 1e3 / count


def measure_model(name: str, device: torch.device, precision: str) -> dict:
    from seg.training import model_of

    overrides, size = MODELS[name]
    cfg = compose(*overrides)
    classes = cfg.dataset.num_classes
    batches = random_batches(STEPS, BATCH, size, classes)
    counted = model_of(cfg.model, classes).to(device, memory_format=torch.channels_last)
    flops = step_flops(counted, batches[0], device, precision) / BATCH
    torch.manual_seed(0)
    # the dataset's classes, as the FLOPs above: make train's 8 (VOC's 21 took 25 % longer)
    model, step = ours_loop(overrides, device, precision, classes)
    rate = timed_loop_images_per_second(step, batches, WARMUP, device)
    result = {"flops_per_image": flops, "images_per_s": rate, "crop": size}
    if device.type == "cpu":
        result["step_ms"] = 1e3 * BATCH / rate
        result["profile_ms"] = profile(model, step, batches)
    return result


def run() -> dict:
    from seg.data.cpus import available_cpus
    from seg.engine import resolve_device, resolve_precision

    device = resolve_device("auto")
    precision = resolve_precision("auto", device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(available_cpus())  # what one training alone takes
    try:
        peak = peak_flops(device, precision)
        peak_backward = peak_flops(device, precision, backward=True)
        models = {name: measure_model(name, device, precision) for name in MODELS}
        loader = loader_ms(MODELS["make train"][1]) if device.type == "cpu" else None
    finally:
        torch.set_num_threads(threads)
    for model in models.values():
        model["fraction"] = model["flops_per_image"] * model["images_per_s"] / peak
    return {"peak_flops": peak, "peak_backward_flops": peak_backward, "precision": precision,
            "threads": available_cpus() if device.type == "cpu" else None, "models": models,
            "loader_ms": loader, "make_train_fraction": models["make train"]["fraction"],
            "device": device_name(device)}


def report(result: dict) -> str:
    threads = f", {result['threads']} threads" if result["threads"] else ""
    lines = [f"Peak: a 3x3 convolution, 128 channels, 64x64, batch 8, {result['precision']}"
             f"{threads}: {result['peak_flops'] / 1e9:.0f} GFLOP/s forward, "
             f"{result['peak_backward_flops'] / 1e9:.0f} forward and backward "
             f"({result['device']})",
             f"  {'model':16s} {'GFLOP/image':>11s} {'images/s':>9s} {'GFLOP/s':>8s} "
             f"{'of peak':>8s}"]
    for name, model in result["models"].items():
        achieved = model["flops_per_image"] * model["images_per_s"]
        lines.append(f"  {name:16s} {model['flops_per_image'] / 1e9:11.3f} "
                     f"{model['images_per_s']:9.1f} {achieved / 1e9:8.0f} "
                     f"{model['fraction']:8.1%}")
    profiled = {name: model for name, model in result["models"].items() if "profile_ms" in model}
    if profiled:
        lines.append(f"  one step by kind, ms (batch {BATCH}; each op timed as it runs, "
                     f"{PROFILED} steps):")
        lines.append(f"  {'kind':16s}" + "".join(f"{name:>16s}" for name in profiled))
        for kind in KIND_ORDER:
            if any(kind in model["profile_ms"] for model in profiled.values()):
                lines.append(f"  {kind:16s}" + "".join(
                    f"{model['profile_ms'].get(kind, 0.0):16.1f}" for model in profiled.values()))
        lines.append(f"  {'step (untimed)':16s}" + "".join(
            f"{model['step_ms']:16.1f}" for model in profiled.values()))
    if result["loader_ms"] is not None:
        lines.append(f"  make train's loader: {result['loader_ms']:.1f} ms per batch of "
                     f"{BATCH} (in the training process, before each step)")
    return "\n".join(lines)
