"""trainer.threads: auto follows the load (seg.engine.threads); a fixed count, the log line
that says which and why, and bad values."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from seg.engine.loop import Trainer
from seg.engine.threads import (
    CpuTimes,
    ThreadPolicy,
    fixed_threads_reason,
    others_busy,
    read_cpu_times,
    threads_for,
)
from seg.errors import BadValue


@pytest.mark.parametrize(("cores", "others", "threads"), [
    (2, 0.0, 2), (2, 0.2, 2), (2, 0.5, 1), (2, 1.0, 1), (2, 1.3, 1), (2, 2.0, 1),
    (4, 1.0, 3), (4, 1.2, 3), (4, 1.4, 2), (1, 0.9, 1)])
def test_one_thread_per_core_that_others_leave_free(cores, others, threads):
    assert threads_for(cores, others) == threads


def fake_proc(root: Path, cpu0: tuple[int, ...], cpu1: tuple[int, ...], own: tuple[int, int]
              ) -> Path:
    """A /proc with two cores' tick counters and this process's utime and stime."""
    (root / "self").mkdir(parents=True, exist_ok=True)
    line = "cpu{} {} 0 0 0"
    (root / "stat").write_text("\n".join([
        "cpu 9 9 9 9 9 9 9 9 0 0",
        line.format(0, " ".join(map(str, cpu0))), line.format(1, " ".join(map(str, cpu1))),
        "intr 1 2 3"]) + "\n")
    # the command holds a space and a parenthesis: the fields are counted after the last ")"
    (root / "self" / "stat").write_text(
        "4242 (python (x) y) R 1 1 1 0 -1 0 0 0 0 0 " + f"{own[0]} {own[1]} 0 0 20 0\n")
    return root


def test_cpu_times_count_busy_ticks_of_the_cores_asked_for(tmp_path):
    import os
    ticks = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq (steal)
    proc = fake_proc(tmp_path, (100, 10, 20, 500, 7, 1, 2, 40), (300, 0, 50, 100, 0, 0, 0, 0),
                     own=(120, 30))
    both = read_cpu_times([0, 1], proc)
    assert both.cores_busy_s == pytest.approx((133 + 350) / ticks)
    assert both.own_busy_s == pytest.approx(150 / ticks)
    assert read_cpu_times([1], proc).cores_busy_s == pytest.approx(350 / ticks)
    assert read_cpu_times([0], tmp_path / "missing") is None


def test_this_machines_proc_reads_and_counts_this_process():
    cores = list(range(64))  # any the machine has
    before = read_cpu_times(cores)
    if before is None:
        pytest.skip("no /proc here")
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    after = read_cpu_times(cores)
    assert after.own_busy_s - before.own_busy_s >= 0.2
    assert after.cores_busy_s - before.cores_busy_s >= after.own_busy_s - before.own_busy_s - 0.05


def test_others_are_the_busy_time_less_our_own():
    before, after = CpuTimes(10.0, 100.0, 40.0), CpuTimes(12.0, 103.0, 41.0)
    assert others_busy(before, after) == pytest.approx(1.0)  # 3 s busy, 1 s ours, over 2 s
    assert others_busy(after, after) == 0.0
    assert others_busy(before, CpuTimes(12.0, 101.0, 41.0)) == 0.0  # never negative


class Load:
    """Readings in which others keep ``self.others`` cores busy, 2 s apart."""

    def __init__(self) -> None:
        self.others, self.at, self.busy = 0.0, 0.0, 0.0

    def __call__(self, cores: list[int]) -> CpuTimes:
        self.at += 2.0
        self.busy += 2.0 * self.others
        return CpuTimes(self.at, self.busy, 0.0)


def test_policy_drops_threads_at_once_and_raises_them_on_the_second_agreeing_look():
    load, counts = Load(), []
    policy = ThreadPolicy([0, 1], read=load, set_threads=counts.append, every_s=2.0,
                          clock=lambda: load.at + 2.0)
    assert policy.start(first_look_s=0).startswith("CPU threads: 2 (2 cores this process may "
                                                   "use, no other process keeps them busy)")
    load.others = 1.0  # another training starts
    assert policy.check() == ("CPU threads 2 -> 1: other processes keep 1.0 of the 2 cores "
                              "it may use busy")
    assert policy.check() is None
    load.others = 0.0  # it finished
    assert policy.check() is None and policy.threads == 1  # a first look raises nothing
    assert policy.check().startswith("CPU threads 1 -> 2")
    load.others = 1.0
    policy.check()
    load.others = 0.0
    policy.check()
    load.others = 1.0  # a neighbour between two of its runs: no raise in between
    assert policy.check() is None and policy.threads == 1
    assert counts == [2, 1, 2, 1]


def test_policy_waits_between_readings():
    load, counts = Load(), []
    policy = ThreadPolicy([0, 1], read=load, set_threads=counts.append, every_s=3600.0,
                          clock=lambda: load.at + 1.0)
    policy.start(first_look_s=0)
    load.others = 2.0
    assert policy.check() is None and counts == [2]


def test_without_proc_auto_keeps_torchs_default():
    policy = ThreadPolicy([0, 1], read=lambda cores: None, set_threads=pytest.fail)
    assert "torch's default" in policy.start(first_look_s=0)
    assert policy.check() is None


def test_a_fixed_count_is_said_and_omp_num_threads_counts_as_fixed(monkeypatch):
    assert fixed_threads_reason(3) == "CPU threads: 3 (trainer.threads)"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert fixed_threads_reason(None) == "CPU threads: 1 (OMP_NUM_THREADS)"
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert fixed_threads_reason(None) is None


@pytest.mark.parametrize("value", [0, -1, "two", 1.5])
def test_a_bad_threads_value_names_the_key_and_the_choices(value):
    with pytest.raises(BadValue, match="trainer.threads must be auto, a positive integer or "
                                       "null"):
        Trainer(threads=value)


@pytest.fixture
def keep_thread_count():
    """The runs below set this process's thread count: the tests after get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_run_log_says_how_many_threads_and_why(compose_train, tmp_path, monkeypatch,
                                                   caplog, keep_thread_count):
    from seg.training import train

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with caplog.at_level("INFO", logger="seg.engine.loop"):
        train(compose_train("trainer.threads=auto"), tmp_path / "auto")
    chosen = [r.message for r in caplog.records if r.message.startswith("CPU threads: ")]
    assert len(chosen) == 1 and "looked at again every 2 s" in chosen[0]
    caplog.clear()
    with caplog.at_level("INFO", logger="seg.engine.loop"):
        train(compose_train("trainer.threads=1"), tmp_path / "one")
    assert "CPU threads: 1 (trainer.threads)" in [r.message for r in caplog.records]
