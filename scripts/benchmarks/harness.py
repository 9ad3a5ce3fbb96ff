"""What every benchmark shares: how it times, the names of the machine and the device it
ran on, the configs it trains, and the report: BENCHMARKS.md, one section per machine,
written through seg.files."""

from __future__ import annotations

import contextlib
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from seg.data.cpus import available_cpus
from seg.engine.device import synchronize
from seg.files import write_text

PRECISION_NAMES = {"32": "fp32", "bf16": "bf16", "16": "fp16"}


# -- timing ----------------------------------------------------------------------------------


def images_per_second(loader: DataLoader, images: int, warmup_batches: int = 2) -> float:
    """Steady-state throughput: worker start-up and the first batches are not counted."""
    batches = iter(loader)
    for _ in range(warmup_batches):
        next(batches)
    seen, start = 0, time.perf_counter()
    while seen < images:
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            continue
        seen += len(batch["mask"] if isinstance(batch, dict) else batch[1])
    return seen / (time.perf_counter() - start)


def epoch_rate(loader: DataLoader, epoch: int) -> float:
    """Samples/s of one whole epoch of ``loader``, its start included."""
    loader.sampler.set_epoch(epoch)
    start = time.perf_counter()
    seen = sum(len(batch["mask"]) for batch in loader)
    return seen / (time.perf_counter() - start)


def timed_loop_images_per_second(step: Callable[[dict], None], batches: list, warmup: int,
                                 device: torch.device) -> float:
    """Images/s of ``step`` over ``batches`` after ``warmup`` steps, the GPU's queue drained
    before and after."""
    for index in range(warmup):
        step(batches[index % len(batches)])
    synchronize(device)
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    synchronize(device)
    return len(batches) * len(batches[0]["mask"]) / (time.perf_counter() - start)


def median_ms(run: Callable[[], None], device: torch.device, warmup: int,
              repeats: int) -> float:
    """Median milliseconds of ``run`` over ``repeats`` calls after ``warmup`` calls, each
    timed from an empty GPU queue to an empty one."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


# -- the machine -----------------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU's model name as lscpu shows it (Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """The CPU, its cores and the versions that the figures depend on."""
    return (f"{cpu_name()}, {available_cpus()} CPUs, torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({machine()})"


def resident_mb() -> float:
    """This process's peak resident set in MiB. Linux's VmHWM belongs to the program
    running now; ``ru_maxrss`` (the fallback elsewhere) also keeps the peak of the process
    it was forked from, so a side started by a grown ``bench.py all`` read 0 MiB of growth."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # in kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_mb(device: torch.device, baseline: float) -> float:
    """CUDA's peak allocation, or the growth of the resident set since ``baseline``."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resident_mb() - baseline


# -- configs ---------------------------------------------------------------------------------


def compose(*overrides: str):
    """configs/train.yaml with ``overrides``, as seg-train composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from seg.cli.command import CONFIG_MODULE

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides))


# -- the report ------------------------------------------------------------------------------


def device_heading() -> str:
    """The section of BENCHMARKS.md that this machine's figures go to."""
    if torch.cuda.is_available():
        return f"## {torch.cuda.get_device_name()}"
    return f"## CPU: {cpu_name()}, {available_cpus()} CPUs"


def write_section(path: Path, heading: str, report: str) -> None:
    """Put ``report`` under ``heading`` in ``path``, keeping the other machines' sections:
    figures from a GPU machine stay when `make bench` runs on a CPU one."""
    text = path.read_text() if path.is_file() else ""
    sections = {}
    for chunk in text.split("\n## ")[1:]:
        title, _, body = chunk.partition("\n")
        sections[f"## {title}"] = body.strip("\n")
    sections[heading] = ("Written by `make bench` (`python scripts/bench.py all`).\n\n"
                         f"```\n{report}\n```")
    write_text(path, "# Benchmarks\n\n" + "\n\n".join(
        f"{title}\n\n{body}" for title, body in sections.items()) + "\n")
