"""Which CPUs this process may use: for loader workers, dataset generation and the
training's threads (seg.engine.threads)."""

from __future__ import annotations

import os


def usable_cpu_ids() -> list[int]:
    """The CPUs this process may run on (its affinity: taskset, a SLURM or container
    limit, not the host's count)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return list(range(os.cpu_count() or 1))


def available_cpus() -> int:
    """How many CPUs this process may run on."""
    return len(usable_cpu_ids())
