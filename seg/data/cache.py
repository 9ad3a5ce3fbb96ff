"""``dataset.cache``: whether a split keeps its decoded samples in memory, and for ``auto``
the budget they must fit.

``auto`` caches a split when every copy of its decoded samples fits
``dataset.cache_budget_mb``. A copy is 4 bytes a pixel (the RGB image and the class mask,
uint8), counted from the image headers, so deciding decodes nothing; each DataLoader worker,
and each training process on the machine, keeps its own copy. The budget's ``auto`` is a
quarter of the memory available when the split is first read, at most 4096 MB: the train
and val splits together then take at most half of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from seg.errors import BadValue, UserError
from seg.files import read_run_text
from seg.settings import is_int

CACHE_MODES = "true, false, auto"
AUTO_BUDGET_SHARE = 4  # a quarter of the available memory
AUTO_BUDGET_MAX_MB = 4096  # beyond this, a split's decoding is rarely what a run waits on
UNKNOWN_MEMORY_BUDGET_MB = 1024  # where the available memory cannot be read (not Linux)
BYTES_PER_PIXEL = 4  # uint8 RGB image + uint8 class mask
MB = 1 << 20
# (limit, usage) of this container's memory, cgroup v2 then v1; a limit of "max" is none
MEMINFO = "/proc/meminfo"
SYSTEM_FILE_BYTES = 1 << 20  # /proc/meminfo and a cgroup's numbers: a few kB at most
CGROUP_MEMORY = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                  "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def cache_mode(value: object) -> bool | str:
    """``dataset.cache``: True, False or ``"auto"`` (``is``: 1 and 0 are not booleans here)."""
    if value is True or value is False or value == "auto":
        return value
    raise BadValue(f"dataset.cache={value!r}: use one of {CACHE_MODES}")


def cache_budget_setting(value: object) -> int | str:
    """``dataset.cache_budget_mb``: a positive integer (MB), or ``"auto"``."""
    if value == "auto" or (is_int(value) and value >= 1):
        return value
    raise BadValue(f"dataset.cache_budget_mb={value!r}: use a positive integer (MB) or auto")


def cache_budget_bytes(setting: int | str) -> int:
    """The budget in bytes; ``auto``: see the module docstring."""
    if setting != "auto":
        return setting * MB
    available = available_memory()
    if available is None:
        return UNKNOWN_MEMORY_BUDGET_MB * MB
    return min(AUTO_BUDGET_MAX_MB * MB, available // AUTO_BUDGET_SHARE)


def available_memory() -> int | None:
    """Bytes this process can still take without swapping: Linux's MemAvailable, lowered to
    what a container's memory limit leaves. None where it cannot be read."""
    available = meminfo_available()
    for limit_file, usage_file in CGROUP_MEMORY:
        limit, usage = read_number(limit_file), read_number(usage_file)
        if limit is not None and usage is not None:
            left = max(0, limit - usage)
            available = left if available is None else min(available, left)
    return available


def meminfo_available() -> int | None:
    text = read_small_file(MEMINFO)
    for line in (text or "").splitlines():
        if line.startswith("MemAvailable:"):
            try:
                return int(line.split()[1]) * 1024  # kB
            except (ValueError, IndexError):
                return None
    return None


def read_number(path: str) -> int | None:
    """The integer in the file at ``path``; None if absent or not a number ("max")."""
    try:
        return int((read_small_file(path) or "").strip())
    except ValueError:
        return None


def read_small_file(path: str) -> str | None:
    """The text of a small system file, read through seg.files (a regular file only, so a
    FIFO or a device mounted there never hangs or fills memory); None when it cannot be."""
    try:
        return read_run_text(path, "system file", SYSTEM_FILE_BYTES)
    except (UserError, OSError):
        return None


def cache_copies(workers: int) -> int:
    """How many copies of a split's cache this machine holds: one per DataLoader worker
    (the main process when there is none), in each training process started here
    (torchrun's LOCAL_WORLD_SIZE, SLURM's tasks per node)."""
    processes = 1
    for key in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        if os.environ.get(key, "").isdigit():
            processes = max(1, int(os.environ[key]))
            break
    return max(1, workers) * processes


def decoded_bytes(sizes: Iterable[tuple[int, int] | None], limit: int) -> int:
    """Bytes the decoded samples of image ``sizes`` (``(height, width)``; None: a header that
    could not be read, which decoding reports) take in memory. Counting stops once past
    ``limit``: a split too large to cache is known from its first images."""
    total = 0
    for size in sizes:
        if size is not None:
            total += BYTES_PER_PIXEL * size[0] * size[1]
        if total > limit:
            break
    return total
