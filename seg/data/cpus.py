"""How many CPUs this process may use: for loader workers and dataset generation."""

from __future__ import annotations

import os


def available_cpus() -> int:
    """CPUs this process may run on (a SLURM or container limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
