"""Nothing a run wrote is lost: saves that follow no link and survive a full disk, one
writer per run folder, resumes that never move a run backwards nor drop a setting."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seg.engine import load_checkpoint, save_checkpoint
from seg.errors import BadValue, PathExists
from seg.files import WriteFailed, write_file
from seg.run_lock import holder_if_locked, run_folder_lock
from seg.training import train

SEG_TRAIN = [sys.executable, "-m", "seg.cli.train"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, shapes_root: Path) -> Path:
    """A debug=tiny run folder (2 iterations, best.pt = last.pt), made by seg-train so that
    it has .hydra/ and train.log; tests copy it before changing it."""
    run = tmp_path_factory.mktemp("safety") / "run"
    subprocess.run([*SEG_TRAIN, "debug=tiny", f"dataset.root={shapes_root}",
                    "dataset.crop_size=48", f"hydra.run.dir={run}"], check=True,
                   capture_output=True, timeout=300)
    return run


def copy_of(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but the lock's (whoever held it last: its own bookkeeping)."""
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != ".lock"}


def seg_train(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*SEG_TRAIN, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, **kwargs)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# -- writes ---------------------------------------------------------------------------------


def test_a_save_never_follows_a_link_planted_in_the_checkpoints_folder(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    os.symlink(victim, folder / "last.pt.tmp")  # the fixed temporary name of earlier versions
    os.symlink(victim, folder / "best.pt")  # and the target itself
    save_checkpoint(folder / "last.pt", {"iteration": 3})
    with pytest.raises(PathExists, match="symbolic link"):
        save_checkpoint(folder / "best.pt", {"iteration": 3})
    assert victim.read_text() == "keep me"
    assert load_checkpoint(folder / "last.pt")["iteration"] == 3


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_partial_one(tmp_path: Path
                                                                          ) -> None:
    target = tmp_path / "last.pt"
    write_file(target, b"previous")

    def fails_half_way(file) -> None:
        file.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(WriteFailed, match=r"cannot write .*last\.pt \(No space left on device; "
                                          r".* free\)"):
        write_file(target, fails_half_way)
    assert target.read_bytes() == b"previous"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.pt"]


def test_a_second_ctrl_c_during_a_save_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    save_checkpoint(target, {"iteration": 1})

    def interrupted_half_way(file) -> None:
        file.write(b"half")
        try:
            raise KeyboardInterrupt
        finally:  # what torch's writer does as it closes the archive it could not finish
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")

    with pytest.raises(KeyboardInterrupt):
        write_file(target, interrupted_half_way)
    assert load_checkpoint(target)["iteration"] == 1
    assert [path.name for path in tmp_path.iterdir()] == ["last.pt"]


def limit_file_size(limit: int):
    def limit_in_child() -> None:
        # past the limit a write fails with EFBIG, as on a full disk, instead of a signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_in_child


def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_loses_nothing(
        trained_run: Path, shapes_root: Path, tmp_path: Path) -> None:
    run = copy_of(trained_run, tmp_path)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    assert len(before) > 1_000_000  # the limit below stops the save, not the logs
    result = seg_train("debug=tiny", f"dataset.root={shapes_root}", "dataset.crop_size=48",
                       f"trainer.resume={run}", "trainer.max_iters=4", cwd=tmp_path,
                       preexec_fn=limit_file_size(1_000_000))
    lines = error_lines(result)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[-1].startswith(f"error: cannot write {run / 'checkpoints'}"), lines
    assert "File too large" in lines[-1] and "free" in lines[-1]
    assert lines[-1] in (run / "train.log").read_text()
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["best.pt",
                                                                           "last.pt"]


# -- one writer per run folder --------------------------------------------------------------


def test_the_lock_names_its_holder_and_goes_with_a_killed_process(tmp_path: Path) -> None:
    with run_folder_lock(tmp_path):
        with pytest.raises(PathExists, match=f"in use by process {os.getpid()} on "), \
                run_folder_lock(tmp_path):
            pass
        assert str(os.getpid()) in holder_if_locked(tmp_path)
    assert holder_if_locked(tmp_path) is None
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from seg.run_lock import run_folder_lock\n"
        f"with run_folder_lock({str(tmp_path)!r}):\n"
        "    print('locked', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert f"process {holder.pid} " in holder_if_locked(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert holder_if_locked(tmp_path) is None  # a stale lock: its holder is gone
    with run_folder_lock(tmp_path):
        pass


def test_a_second_run_into_a_folder_in_use_is_refused_before_anything_is_written(
        trained_run: Path, shapes_root: Path, tmp_path: Path) -> None:
    for resume in ("auto", "false"):
        run = copy_of(trained_run, tmp_path / resume)
        before = folder_bytes(run)
        with run_folder_lock(run):
            result = seg_train("debug=tiny", f"dataset.root={shapes_root}",
                               f"trainer.resume={resume}", f"hydra.run.dir={run}", cwd=tmp_path)
            assert result.returncode == 1 and error_lines(result) == [
                f"error: run folder {run} is in use by process {os.getpid()} on "
                f"{os.uname().nodename}: wait for that run to end, or train into another "
                "folder (another hydra.run.dir, or none for a dated one)"]
        assert folder_bytes(run) == before


@pytest.mark.slow  # two seg-train runs; the lock tests above cover the refusal
def test_two_runs_started_together_into_one_folder_train_once(shapes_root: Path,
                                                              tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [*SEG_TRAIN, "debug=tiny", f"dataset.root={shapes_root}", "dataset.crop_size=48",
            "trainer.max_iters=6", f"hydra.run.dir={run}"]
    first, second = (subprocess.Popen(args, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
                     for _ in range(2))
    results = [(process.wait(timeout=300), process.stderr.read()) for process in (first, second)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    refused = next(stderr for code, stderr in results if code == 1)
    # refused by the lock, or, had the first run ended before, as a folder holding a run
    assert "Traceback" not in refused
    assert "is in use by process" in refused or "already holds a run" in refused
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 6


# -- resumes --------------------------------------------------------------------------------


def with_last_at_iteration(run: Path, iteration: int) -> None:
    """Make the run's last.pt newer than its best.pt (as after more training)."""
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    state["iteration"] = iteration
    torch.save(state, run / "checkpoints" / "last.pt")


def test_resuming_from_an_older_checkpoint_of_the_folder_is_refused(
        trained_run: Path, compose_train, tmp_path: Path) -> None:
    run = copy_of(trained_run, tmp_path)
    with_last_at_iteration(run, 6)
    before = folder_bytes(run)
    best = run / "checkpoints" / "best.pt"
    cfg = compose_train(f"trainer.resume={best}", "trainer.max_iters=4")
    with pytest.raises(PathExists, match=r"best\.pt is at iteration 2 but .*last\.pt is at "
                                         r"iteration 6: resuming would discard"):
        train(cfg, run)
    assert folder_bytes(run) == before


def test_rewind_goes_back_on_purpose_and_keeps_the_newer_checkpoint(
        trained_run: Path, compose_train, tmp_path: Path) -> None:
    run = copy_of(trained_run, tmp_path)
    with_last_at_iteration(run, 6)
    newer = (run / "checkpoints" / "last.pt").read_bytes()
    cfg = compose_train(f"trainer.resume={run / 'checkpoints' / 'best.pt'}",
                        "trainer.max_iters=4", "trainer.rewind=true")
    assert train(cfg, run)["iterations"] == 4
    assert (run / "checkpoints" / "last_iteration_6.pt").read_bytes() == newer
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 4


@pytest.mark.parametrize("override, key", [
    ("optimizer.lr=1000000.0", "optimizer.lr"),
    ("seed=5", "seed"),
    ("model/upsampler=bilinear", "model.upsampler"),
])
def test_a_setting_that_a_resume_cannot_honour_is_refused(
        trained_run: Path, compose_train, tmp_path: Path, override: str, key: str) -> None:
    run = copy_of(trained_run, tmp_path)
    before = folder_bytes(run)
    cfg = compose_train(f"trainer.resume={run}", "trainer.max_iters=4", override)
    with pytest.raises(BadValue, match=rf"^{key}.* but the run being resumed has .*drop the "
                                       "override, or start a new run"):
        train(cfg, run)
    assert folder_bytes(run) == before


def test_settings_a_resume_applies_go_through(trained_run: Path, compose_train,
                                              tmp_path: Path) -> None:
    run = copy_of(trained_run, tmp_path)
    cfg = compose_train(f"trainer.resume={run}", "trainer.max_iters=4", "loss=ce",
                        "scheduler.power=2.0", "dataset.batch_size=4")
    assert train(cfg, run)["iterations"] == 4


@pytest.mark.parametrize("resume", ["trainer.resume=auto", pytest.param(
    "trainer.resume=true", marks=pytest.mark.slow)])  # a seg-train each
def test_a_failed_resume_of_any_kind_leaves_the_hydra_files_as_they_were(
        trained_run: Path, shapes_root: Path, tmp_path: Path, resume: str) -> None:
    run = copy_of(trained_run, tmp_path)
    hydra_files = {path.name: path.read_bytes() for path in (run / ".hydra").iterdir()}
    result = seg_train("debug=tiny", f"dataset.root={shapes_root}", "dataset.crop_size=48",
                       resume, f"hydra.run.dir={run}", "optimizer.lr=1000000.0",
                       "trainer.max_iters=4", cwd=tmp_path)
    assert result.returncode == 1 and len(error_lines(result)) == 1, result.stderr
    assert "optimizer.lr=1000000.0 but the run being resumed has 0.004" in result.stderr
    assert {path.name: path.read_bytes() for path in (run / ".hydra").iterdir()} == hydra_files


@pytest.mark.slow  # a seg-train
def test_training_into_a_folder_holding_a_run_keeps_its_hydra_files(
        trained_run: Path, shapes_root: Path, tmp_path: Path) -> None:
    run = copy_of(trained_run, tmp_path)
    before = folder_bytes(run)
    result = seg_train("debug=tiny", f"dataset.root={shapes_root}", f"hydra.run.dir={run}",
                       "seed=3", cwd=tmp_path)
    assert result.returncode == 1 and "already holds a run" in result.stderr
    after = folder_bytes(run)
    assert {name: data for name, data in after.items() if name != "train.log"} == {
        name: data for name, data in before.items() if name != "train.log"}


# -- messages -------------------------------------------------------------------------------


def test_a_damaged_checkpoint_is_named_without_torchs_advice(trained_run: Path,
                                                              tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    data = (trained_run / "checkpoints" / "last.pt").read_bytes()
    (folder / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadValue) as error:
        load_checkpoint(folder / "last.pt")
    message = str(error.value)
    assert message.startswith(f"checkpoint {folder / 'last.pt'} cannot be read (")
    assert "weights_only" not in message and str(folder / "best.pt") not in message
    assert "\n" not in message
    shutil.copy(trained_run / "checkpoints" / "best.pt", folder / "best.pt")
    with pytest.raises(BadValue, match=r"use another one, e\.g\. .*best\.pt"):
        load_checkpoint(folder / "last.pt")


def test_a_pickle_that_would_run_code_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": Path("x")}, path)
    with pytest.raises(BadValue, match="holds objects other than tensors") as error:
        load_checkpoint(path)
    assert "weights_only" not in str(error.value)


@pytest.mark.parametrize("value", ["fast", "-1", "0"])
def test_a_bad_learning_rate_is_one_line(compose_train, tmp_path: Path, value: str) -> None:
    with pytest.raises(BadValue, match=r"^optimizer\.lr must be a positive number, got"):
        train(compose_train(f"optimizer.lr={value}"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_metrics_json_is_written_whole(trained_run: Path) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["iterations"] == 2
    assert not list(trained_run.glob(".metrics.json.*"))
