"""seg-compare's progress while its sweep runs: run k of n, and an ETA from this start's
pace."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from seg.study.progress import SweepProgress, duration, finished_runs, progress_line
from seg.study.sweep import sweep_size


def finish(sweep: Path, *numbers: int) -> None:
    for number in numbers:
        (sweep / str(number)).mkdir(parents=True, exist_ok=True)
        (sweep / str(number) / "metrics.json").write_text("{}")


def test_the_eta_comes_from_the_runs_this_start_finished() -> None:
    now = datetime(2026, 12, 7, 14, 0)
    # 2 of 12 done before; 2 more in 10 min: 8 left at 5 min each
    assert progress_line(4, 12, 2, 600, now) == (
        "run 4 of 12 finished after 10 min; the rest in about 40 min (ETA 14:40)")
    assert progress_line(12, 12, 0, 3900, now) == "run 12 of 12 finished after 1 h 05 min"
    assert duration(40.4) == "40 s"


def test_only_numbered_run_folders_with_metrics_count(tmp_path: Path) -> None:
    finish(tmp_path, 0, 1)
    (tmp_path / "3_decoder=fcn8s,seed=0").mkdir()  # as the study's sweeps name them
    (tmp_path / "3_decoder=fcn8s,seed=0" / "metrics.json").write_text("{}")
    (tmp_path / "2").mkdir()  # still training
    (tmp_path / "pretrained_encoder").mkdir()
    (tmp_path / "pretrained_encoder" / "metrics.json").write_text("{}")
    assert finished_runs(tmp_path) == 3


def test_progress_prints_a_line_as_runs_finish(tmp_path: Path, capsys) -> None:
    finish(tmp_path, 0)
    with SweepProgress(tmp_path, total=3, poll=0.01) as progress:
        finish(tmp_path, 1)
        progress.report()
        finish(tmp_path, 2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "1 of 3 runs finished before: kept as they are"
    assert lines[1].startswith("run 2 of 3 finished after ") and "ETA" in lines[1]
    assert lines[-1].startswith("run 3 of 3 finished after ") and "ETA" not in lines[-1]


def test_the_sweep_size_is_the_product_of_the_swept_values() -> None:
    assert sweep_size(["compare=default"]) == 9  # 3 upsamplers x 1 decoder x 3 seeds
    assert sweep_size(["compare=quick"]) == 6
    assert sweep_size(["compare=default", "seed=0", "model/decoder=fcn8s,fcn32s"]) == 6


def test_the_running_time_adds_up_over_starts(tmp_path: Path, monkeypatch, capsys) -> None:
    from seg.study import progress
    from seg.study.progress import RUNNING_TIME, RunningTime, running_time_text

    clock = iter([100.0, 700.0, 1000.0, 1500.0, 1500.0])  # two starts: 600 s, then 500 s
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    folder = tmp_path / "sweep"  # made when the study starts
    with RunningTime(folder, poll=3600):
        pass
    assert json.loads((folder / RUNNING_TIME).read_text()) == {"starts": [600.0]}
    assert running_time_text(folder) == "10 min (wall time: running_time.json)"
    with RunningTime(folder, poll=3600) as running:
        pass
    assert running.summary() == "18 min over 2 starts (this one 8 min)"
    assert json.loads((folder / RUNNING_TIME).read_text()) == {"starts": [600.0, 500.0]}
    assert "earlier starts of this study ran 10 min" in capsys.readouterr().out
    assert running_time_text(folder) == (
        "18 min over 2 starts of the command (wall time: running_time.json)")
    assert running_time_text(tmp_path) is None  # no file: nothing to say


def test_a_damaged_running_time_file_is_one_line_naming_it(tmp_path: Path) -> None:
    from seg.errors import BadValue
    from seg.study.progress import RUNNING_TIME, RunningTime

    for text in ('{"starts": ["an hour"]}', '{"starts": 5}', "not json"):
        (tmp_path / RUNNING_TIME).write_text(text)
        with pytest.raises(BadValue, match=f"{RUNNING_TIME}.*delete it to count"), \
                RunningTime(tmp_path):
            pass
        assert (tmp_path / RUNNING_TIME).read_text() == text  # never overwritten
