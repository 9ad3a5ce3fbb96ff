"""Durations as a person reads them, for logs that say how long something took or will."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``1 h 05 min``, ``12 min``, ``40 s``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def elapsed_and_eta(elapsed: float, done: int, total: int) -> str:
    """``elapsed 1 min, ETA 3 min``: the time so far and the rest at the same pace
    (``done`` of ``total`` steps in ``elapsed`` seconds); the elapsed time alone before
    the first step and after the last."""
    if done <= 0 or done >= total:
        return f"elapsed {duration(elapsed)}"
    return f"elapsed {duration(elapsed)}, ETA {duration(elapsed / done * (total - done))}"
