"""How many CPU threads a training process uses (``trainer.threads: auto``): one per core
it may use that no other process keeps busy, looked at again as the run goes.

Why: torch starts one thread per core and its OpenMP threads spin while they wait for
each other, so two processes that each take every core of a machine wait on each other's
spinning. Measured on the 2-core Xeon (make train's recipe, images/s): one training alone
68 with 2 threads, 55 with 1; two at once 11 + 11 with 2 threads each, 64 + 64 with 1
each; beside a busy single-threaded process 7 with 2 threads, 59 with 1. OpenMP's
passive waiting does not save the shared case (11 + 11, issue 41) and costs the lone
run (58), so the spinning stays and the thread count follows the load instead.

The load is read from Linux's /proc: the cores' busy time less this process's own (its
threads' spinning included), over a few seconds. Where /proc is missing, ``auto`` keeps
torch's default.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from seg.data.cpus import usable_cpu_ids

# A core another process keeps busy this share of the time or more counts as taken:
# daemons' blips do not cost a thread, a half-busy neighbour does.
TAKEN_SHARE = 0.25
CHECK_EVERY_S = 2.0  # how often the load is read again while training


@dataclass(frozen=True)
class CpuTimes:
    """Busy seconds of a set of cores and of this process, at a moment (``at``: seconds
    of ``time.monotonic``)."""

    at: float
    cores_busy_s: float
    own_busy_s: float


def read_cpu_times(cores: list[int], proc: Path = Path("/proc")) -> CpuTimes | None:
    """The busy time of ``cores`` (user, nice, system, irq, softirq: steal and waiting for
    disks left out) and of this process's threads, from ``proc``; None without it."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        stat = (proc / "stat").read_text().splitlines()
        own = (proc / "self" / "stat").read_text()
    except OSError:
        return None
    wanted = {f"cpu{core}" for core in cores}
    busy = 0
    for line in stat:
        fields = line.split()
        if fields and fields[0] in wanted:
            user, nice, system, _idle, _iowait, irq, softirq = map(int, fields[1:8])
            busy += user + nice + system + irq + softirq
    # the fields after the command's closing parenthesis; utime and stime are 14 and 15
    after_command = own.rsplit(")", 1)[1].split()
    own_ticks = int(after_command[11]) + int(after_command[12])
    return CpuTimes(time.monotonic(), busy / ticks, own_ticks / ticks)


def others_busy(before: CpuTimes, after: CpuTimes) -> float:
    """How many cores' worth of time other processes kept busy between two readings."""
    elapsed = after.at - before.at
    if elapsed <= 0:
        return 0.0
    others = (after.cores_busy_s - before.cores_busy_s) - (after.own_busy_s - before.own_busy_s)
    return max(0.0, others / elapsed)


def set_torch_threads(threads: int) -> None:
    """torch's thread count, left alone where it already is ``threads`` (setting it also
    resets oneDNN's cache of prepared kernels)."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def threads_for(cores: int, others: float) -> int:
    """One thread per core that other processes leave free (a core they keep busy
    :data:`TAKEN_SHARE` of the time counts as taken), at least one."""
    taken = math.ceil(others - TAKEN_SHARE) if others > TAKEN_SHARE else 0
    return max(1, cores - taken)


def describe_load(others: float, cores: int) -> str:
    of_cores = f"{cores} core{'s' if cores > 1 else ''}"
    if others <= TAKEN_SHARE:
        return f"{of_cores} this process may use, no other process keeps them busy"
    return f"other processes keep {others:.1f} of the {of_cores} it may use busy"


class ThreadPolicy:
    """Sets torch's thread count from the load, at the start of a run and every
    :data:`CHECK_EVERY_S` after (:meth:`check`, called after each step). Fewer threads at
    once when others take cores (spinning threads on a shared core cost the most), more
    only when two readings in a row agree (a neighbour between two runs is not gone)."""

    def __init__(self, cores: list[int] | None = None,
                 read: Callable[[list[int]], CpuTimes | None] = read_cpu_times,
                 set_threads: Callable[[int], None] = set_torch_threads,
                 every_s: float = CHECK_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cores = cores if cores is not None else usable_cpu_ids()
        self.read, self.set_threads, self.every_s, self.clock = read, set_threads, every_s, clock
        self.threads = len(self.cores)
        self.last: CpuTimes | None = None
        self.raise_to: int | None = None  # a higher count seen once, waiting for a second look

    def start(self, first_look_s: float = 0.2) -> str:
        """Decide from a short first look at the load; what it chose and why."""
        self.last = self.read(self.cores)
        if self.last is None:
            return (f"CPU threads: torch's default ({torch.get_num_threads()}): no /proc to "
                    "read the load from")
        time.sleep(first_look_s)
        now = self.read(self.cores)
        others = others_busy(self.last, now)
        self.last = now
        self.threads = threads_for(len(self.cores), others)
        self.set_threads(self.threads)
        return (f"CPU threads: {self.threads} ({describe_load(others, len(self.cores))}); "
                f"looked at again every {self.every_s:g} s (trainer.threads=N fixes it)")

    def check(self) -> str | None:
        """Read the load again when it is time; a line saying so when the count changes."""
        if self.last is None or self.clock() - self.last.at < self.every_s:
            return None
        now = self.read(self.cores)
        others = others_busy(self.last, now)
        self.last = now
        wanted = threads_for(len(self.cores), others)
        if wanted > self.threads and self.raise_to != wanted:
            self.raise_to = wanted  # raise on the second reading that agrees
            return None
        self.raise_to = None
        if wanted == self.threads:
            return None
        line = f"CPU threads {self.threads} -> {wanted}: {describe_load(others, len(self.cores))}"
        self.threads = wanted
        self.set_threads(wanted)
        return line


def fixed_threads_reason(threads: int | None) -> str | None:
    """Why the thread count is not chosen from the load (None: ``auto`` chooses it)."""
    if threads is not None:
        return f"CPU threads: {threads} (trainer.threads)"
    if os.environ.get("OMP_NUM_THREADS"):
        return f"CPU threads: {os.environ['OMP_NUM_THREADS']} (OMP_NUM_THREADS)"
    return None
