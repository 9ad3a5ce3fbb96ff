"""What a running sweep says while its runs train in other processes: each time runs
finish, how many of how many are done and when the rest should be, from the pace of the
runs that finished since this start (runs an earlier start finished are counted done,
never in the pace). A run is done when its folder holds metrics.json, which seg-train
writes last and whole. And how long the study has run over every start of the same
command (:class:`RunningTime`): a study that resumes after interruptions still has one
running time, the figure its cost is stated by."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Self

from seg.clock import duration
from seg.errors import BadValue
from seg.files import read_json, write_text
from seg.text import printable

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


class Ticking:
    """A ``with`` block during which a thread calls :meth:`tick` every ``poll`` seconds,
    and once more as it ends (what happened since the last call); :meth:`begin` runs as
    it starts."""

    def __init__(self, poll: float) -> None:
        self.poll = poll
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.keep_ticking, daemon=True)

    def __enter__(self) -> Self:
        self.begin()
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stopped.set()
        self.thread.join()
        self.tick()

    def keep_ticking(self) -> None:
        while not self.stopped.wait(self.poll):
            self.tick()

    def begin(self) -> None:
        pass

    def tick(self) -> None:
        raise NotImplementedError


class SweepProgress(Ticking):
    """While in its ``with`` block, a thread prints :func:`progress_line` whenever more
    runs of ``sweep_dir`` have finished; ``total``: the runs of the sweep."""

    def __init__(self, sweep_dir: Path, total: int, poll: float = POLL_SECONDS) -> None:
        super().__init__(poll)
        self.sweep_dir, self.total = sweep_dir, total

    def begin(self) -> None:
        self.start = time.monotonic()
        self.done_before = self.seen = finished_runs(self.sweep_dir)
        if self.done_before:
            print(f"{self.done_before} of {self.total} runs finished before: kept as they are",
                  flush=True)

    def tick(self) -> None:
        self.report()

    def report(self) -> None:
        done = finished_runs(self.sweep_dir)
        if done > self.seen:
            self.seen = done
            print(progress_line(done, self.total, self.done_before,
                                time.monotonic() - self.start, datetime.now()), flush=True)


RUNNING_TIME = "running_time.json"  # in the sweep folder: {"starts": [seconds, ...]}


def earlier_starts(path: Path) -> list[float]:
    """The running seconds of each earlier start that ``path`` records; none without it."""
    if not path.is_file():
        return []
    fix = "delete it to count the running time from this start on"
    starts = read_json(path, "study running time", fix=fix).get("starts")
    if not isinstance(starts, list) or not all(
            isinstance(s, int | float) and not isinstance(s, bool) and 0 <= s < 1e8
            for s in starts):
        raise BadValue(f"{printable(path)}: 'starts' must be a list of seconds, not what seg "
                       f"writes: {fix}")
    return [float(s) for s in starts]


class RunningTime(Ticking):
    """While in its ``with`` block, this start's running seconds are kept in the sweep
    folder's :data:`RUNNING_TIME` beside every earlier start's, rewritten every ``poll``
    seconds (a killed study loses at most that) and when the block ends. Wall time: a
    machine that pauses the study (``kill -STOP``) counts as running."""

    def __init__(self, sweep_dir: Path, poll: float = 30.0) -> None:
        super().__init__(poll)
        self.path = sweep_dir / RUNNING_TIME

    def begin(self) -> None:
        self.earlier = earlier_starts(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.start = time.monotonic()
        if self.earlier:
            print(f"earlier starts of this study ran {duration(sum(self.earlier))}", flush=True)

    def tick(self) -> None:
        starts = [*self.earlier, round(time.monotonic() - self.start, 1)]
        write_text(self.path, json.dumps({"starts": starts}) + "\n")

    def summary(self) -> str:
        """``2 h 51 min over 2 starts (this one 1 h 02 min)``, or ``12 min`` for one."""
        this = time.monotonic() - self.start
        if not self.earlier:
            return duration(this)
        return (f"{duration(sum(self.earlier) + this)} over {len(self.earlier) + 1} starts "
                f"(this one {duration(this)})")


def running_time_text(sweep_dir: Path) -> str | None:
    """What the sweep folder's :data:`RUNNING_TIME` says, as compare.md states it; None
    without one."""
    starts = earlier_starts(sweep_dir / RUNNING_TIME)
    if not starts:
        return None
    over = f" over {len(starts)} starts of the command" if len(starts) > 1 else ""
    return f"{duration(sum(starts))}{over} (wall time: running_time.json)"
