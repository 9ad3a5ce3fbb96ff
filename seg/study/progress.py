"""What a running sweep says while its runs train in other processes: each time runs
finish, how many of how many are done and when the rest should be, from the pace of the
runs that finished since this start (runs an earlier start finished are counted done,
never in the pace). A run is done when its folder holds metrics.json, which seg-train
writes last and whole."""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType

from seg.clock import duration

POLL_SECONDS = 10.0
RUN_FOLDER = re.compile(r"\d+(_|$)")


def finished_runs(sweep_dir: Path) -> int:
    """The run folders of ``sweep_dir`` (Hydra's job number first: ``3`` or
    ``3_decoder=fcn8s,...``) that hold their metrics.json."""
    return sum(1 for path in sweep_dir.glob("*/metrics.json")
               if RUN_FOLDER.match(path.parent.name))


def progress_line(done: int, total: int, done_before: int, elapsed: float,
                  now: datetime) -> str:
    """``run 4 of 12 finished after 9 min; the rest in about 18 min (ETA 14:32)``; no
    ETA until a run of this start has finished."""
    line = f"run {done} of {total} finished after {duration(elapsed)}"
    new = done - done_before
    if new <= 0 or done >= total:
        return line
    remaining = elapsed / new * (total - done)
    eta = (now + timedelta(seconds=remaining)).strftime("%H:%M")
    return f"{line}; the rest in about {duration(remaining)} (ETA {eta})"


class SweepProgress:
    """While in its ``with`` block, a thread prints :func:`progress_line` whenever more
    runs of ``sweep_dir`` have finished; ``total``: the runs of the sweep."""

    def __init__(self, sweep_dir: Path, total: int, poll: float = POLL_SECONDS) -> None:
        self.sweep_dir, self.total, self.poll = sweep_dir, total, poll
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def __enter__(self) -> SweepProgress:
        self.start = time.monotonic()
        self.done_before = self.seen = finished_runs(self.sweep_dir)
        if self.done_before:
            print(f"{self.done_before} of {self.total} runs finished before: kept as they are",
                  flush=True)
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stopped.set()
        self.thread.join()
        self.report()  # the last runs, finished between two polls

    def watch(self) -> None:
        while not self.stopped.wait(self.poll):
            self.report()

    def report(self) -> None:
        done = finished_runs(self.sweep_dir)
        if done > self.seen:
            self.seen = done
            print(progress_line(done, self.total, self.done_before,
                                time.monotonic() - self.start, datetime.now()), flush=True)
