"""A study that survives interruption: the same seg-compare command finds its sweep
folder again, keeps what finished and resumes the rest; the longer baseline sweep; the
study's runs submitted through submitit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from seg.engine import TrainingInterrupted, load_checkpoint
from seg.engine.tensorboard import TensorBoardLogger
from seg.study.runs import load_runs
from seg.study.sweep import folder_name, longer_baseline_overrides, setting
from seg.training import finished_metrics, train
from tests.conftest import needs_submitit

TINY_STUDY = ["debug=tiny", "dataset.crop_size=48", "pretrain.iterations=2",
              "pretrain.batch_size=2", "model/upsampler=bilinear,transposed",
              "model/decoder=fcn8s", "seed=0"]


def test_the_same_command_names_the_same_folder() -> None:
    assert folder_name(["compare=quick"]) == "quick"
    assert folder_name(["compare=default"]) == "default"
    seeds = folder_name(["compare=default", "seed=0,1"])
    assert seeds.startswith("default_seed-0-1-") and seeds == folder_name(
        ["compare=default", "seed=0,1"])
    odd = folder_name(["compare=default", "dataset.root=/data/my set"])
    assert not set("/ =,") & set(odd)  # a folder, and a value in an override
    assert odd != folder_name(["compare=default", "dataset.root=/data/my-set"])
    assert len(folder_name(["compare=default", "x" * 300])) < 70
    # how the runs are launched is not part of the study: SLURM resumes a local start
    assert folder_name(["compare=quick", "hydra/launcher=slurm",
                        "hydra.launcher.partition=gpu"]) == "quick"


def test_setting_is_the_last_override_of_the_key() -> None:
    overrides = ["trainer.resume=auto", "seed=0", "+trainer.resume=never"]
    assert setting(overrides, "trainer.resume") == "never"
    assert setting(overrides, "trainer") is None


def test_the_longer_baseline_is_bilinear_at_twice_the_budget_for_its_seeds() -> None:
    overrides = ["compare=default", "model/decoder=fcn32s,fcn8s", "seed=0,1,2",
                 "model/upsampler=bilinear,transposed", "trainer.max_iters=300",
                 "hydra.sweep.dir=out/sweep", "trainer.resume=auto", "hydra/launcher=slurm"]
    assert longer_baseline_overrides(overrides, "out/sweep") == [
        "compare=default", "trainer.resume=auto", "hydra/launcher=slurm",
        "model/upsampler=bilinear", "model/decoder=fcn32s,fcn8s", "seed=0",
        "trainer.max_iters=600", "trainer.threads=auto",
        "hydra.sweep.dir=out/sweep/longer_baseline"]
    # a command line's own thread count holds for them too
    given = longer_baseline_overrides([*overrides, "trainer.threads=1"], "out/sweep")
    assert "trainer.threads=1" in given and "trainer.threads=auto" not in given


def test_the_longer_baseline_takes_the_presets_decoders_and_seeds() -> None:
    longer = longer_baseline_overrides(["compare=gpu", "study.longer_baseline_seeds=[0,1]",
                                        "study.longer_baseline_factor=3"], "out")
    assert longer[-5:] == ["model/decoder=fcn32s,fcn8s", "seed=0,1", "trainer.max_iters=9600",
                           "trainer.threads=auto", "hydra.sweep.dir=out/longer_baseline"]
    assert longer_baseline_overrides(["compare=quick", "study.longer_baseline_seeds=[]"],
                                     "out") is None


def file_times(folder: Path) -> dict[Path, int]:
    """Every file's modification time, but Hydra's and the lock's (rewritten per start)."""
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()
            and path.name != ".lock" and ".hydra" not in path.parts and path.suffix != ".log"}


def test_a_finished_run_is_left_as_it_is_unless_its_config_changed(
        compose_train, tmp_path: Path) -> None:
    cfg = compose_train("trainer.resume=auto")
    first = train(cfg, tmp_path)
    before = file_times(tmp_path)
    assert train(compose_train("trainer.resume=auto"), tmp_path) == first
    assert file_times(tmp_path) == before  # nothing trained, evaluated nor written
    trainer = SimpleNamespace(resume="auto", max_iters=2)
    assert finished_metrics(cfg, tmp_path, trainer) == first
    # a new recipe resumes instead, so that .hydra/ never names one that did not train it
    assert finished_metrics(compose_train("trainer.resume=auto", "loss.dice_weight=0.5"),
                            tmp_path, trainer) is None
    assert finished_metrics(cfg, tmp_path, SimpleNamespace(resume="auto", max_iters=4)) is None
    assert finished_metrics(cfg, tmp_path, SimpleNamespace(resume=True, max_iters=2)) is None
    (tmp_path / "metrics.json").unlink()  # killed after the last save, before metrics.json
    assert finished_metrics(cfg, tmp_path, trainer) is None


def run_folder(sweep: Path, upsampler: str) -> Path:
    return next(run["run_dir"] for run in load_runs(sweep)[0] if run["upsampler"] == upsampler)


def seg_compare(*overrides: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seg.cli.compare", *overrides], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def stop_at_first_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next training in this process get SIGTERM after its first step, as a
    preempted SLURM job does (the logger's class is patched: the config stays the same)."""
    log_scalars = TensorBoardLogger.log_scalars

    def signalled(self, values: dict[str, float], step: int) -> None:
        log_scalars(self, values, step)
        if step == 1 and "train/loss" in values:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(TensorBoardLogger, "log_scalars", signalled)


def interrupt(run: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Turn a finished run of the sweep into one killed at iteration 1: trained again from
    scratch with its own config, stopped by a signal."""
    shutil.rmtree(run / "checkpoints")
    shutil.rmtree(run / "tb")
    (run / "metrics.json").unlink()
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    stop_at_first_step(monkeypatch)
    monkeypatch.chdir(cwd)  # seg-compare's: the encoder's path is relative to it
    with pytest.raises(TrainingInterrupted, match="at iteration 1"):
        train(cfg, run)
    monkeypatch.undo()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 1


def start_killed_after_its_sweep(command: list[str], sweep: Path, cwd: Path) -> str:
    """Start seg-compare and kill it (SIGKILL, the whole process group) once the runs of
    its sweep have written their metrics.json, before the longer baseline and the report;
    return what it printed."""
    output = cwd / "first.out"
    with output.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "seg.cli.compare", *command],
                                   cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        deadline = time.monotonic() + 300
        while len(list(sweep.glob("*/metrics.json"))) < 2 and process.poll() is None:
            assert time.monotonic() < deadline, output.read_text()[-2000:]
            time.sleep(0.2)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    shutil.rmtree(sweep / "longer_baseline", ignore_errors=True)  # had it begun: not yet
    return output.read_text()


@pytest.mark.slow  # two starts of a 3-run study, one killed: 65-90 s on 2 cores
def test_a_killed_study_rerun_keeps_finished_runs_and_resumes_the_rest(
        tmp_path: Path, shapes_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of 2 iterations and the longer baseline of 4. The first start is killed
    after its sweep, and its transposed run is made one killed at iteration 1: the same
    command again keeps the encoder and the bilinear run, resumes the transposed one from
    iteration 1, runs the longer baseline and writes the report."""
    command = [*TINY_STUDY, f"dataset.root={shapes_root}"]
    sweep = tmp_path / "outputs" / "compare" / folder_name(["compare=default", *command])
    first = start_killed_after_its_sweep(command, sweep, tmp_path)
    assert f"sweep folder: {sweep.relative_to(tmp_path)} (the same command again resumes" \
        in first
    finished, killed = run_folder(sweep, "bilinear"), run_folder(sweep, "transposed")
    interrupt(killed, tmp_path, monkeypatch)
    kept = file_times(finished) | file_times(sweep / "pretrained_encoder")

    again = seg_compare(*command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "from an earlier start of this sweep" in again.stdout
    assert file_times(finished) | file_times(sweep / "pretrained_encoder") == kept
    assert "already finished: trained to iteration 2" in (finished / "train.log").read_text()
    log = (killed / "train.log").read_text()
    assert f"resumed from {killed / 'checkpoints' / 'last.pt'} at iteration 1" in log
    assert load_checkpoint(killed / "checkpoints" / "last.pt")["iteration"] == 2
    assert not list(killed.glob(".hydra/config_until_*"))  # resumed with its own recipe
    longer = load_runs(sweep / "longer_baseline")[0]
    assert [(run["upsampler"], run["seed"], run["iterations"]) for run in longer] == [
        ("bilinear", 0, 4)]
    assert len(load_runs(sweep)[0]) == 2  # the longer baseline is no run of the sweep
    report = (sweep / "compare.md").read_text()
    assert "Failed runs: none" in report


@needs_submitit
@pytest.mark.slow
def test_seg_compare_submits_its_runs_through_submitit(tmp_path: Path, shapes_root: Path
                                                       ) -> None:
    """hydra/launcher=slurm's plugin, with submitit's local executor standing in for SLURM;
    the pretraining runs here."""
    sweep = tmp_path / "sweep"
    result = seg_compare(*TINY_STUDY, f"dataset.root={shapes_root}",
                         "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                         f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(load_runs(sweep)[0]) == 2 and len(load_runs(sweep / "longer_baseline")[0]) == 1
    assert len(list(sweep.glob(".submitit/*/*_log.out"))) == 2  # one job per run
    assert not list((sweep / "pretrained_encoder").rglob("*_log.out"))
    assert "Failed runs: none" in (sweep / "compare.md").read_text()


SLOW_STEPS = '''
"""Each training step takes 0.3 s longer: time for the test to kill the pretraining
between two of its checkpoints."""
import time

from seg.engine import Trainer

step = Trainer.train_step


def slow_step(self, *args, **kwargs):
    time.sleep(0.3)
    return step(self, *args, **kwargs)


Trainer.train_step = slow_step
'''


def test_a_study_killed_while_pretraining_goes_on_from_its_checkpoint(
        tmp_path: Path, shapes_root: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture) -> None:
    """seg-compare's pretraining (seg-pretrain, in a process of its own) killed with
    SIGKILL after its first checkpoints; the same command again continues it from its
    last checkpoint instead of starting over, and writes the encoder."""
    from seg.cli.command import module_command
    from seg.study import sweep

    monkeypatch.chdir(tmp_path)
    (tmp_path / "slow_steps.py").write_text(SLOW_STEPS)
    overrides = ["compare=default", "imports=[slow_steps]", "debug=tiny",
                 "dataset.crop_size=48", f"dataset.root={shapes_root}",
                 "pretrain.iterations=12", "pretrain.batch_size=2",
                 "pretrain.checkpoint_every=2", "trainer.log_every=1"]
    last = tmp_path / "pretrained_encoder" / "checkpoints" / "last.pt"
    started = []

    def killed_after_a_checkpoint(command, check):
        child = subprocess.Popen(command)
        started.append(child)
        deadline = time.monotonic() + 120
        while not last.is_file() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        child.kill()  # SIGKILL: no handler saves anything more
        return subprocess.CompletedProcess(command, child.wait())

    monkeypatch.setattr(sweep.subprocess, "run", killed_after_a_checkpoint)
    pretrain = module_command("seg.cli.pretrain")
    encoder, status = sweep.pretrained_encoder(overrides, tmp_path, pretrain)
    assert status == -signal.SIGKILL and not encoder.exists()
    stopped_at = load_checkpoint(last)["iteration"]
    assert 2 <= stopped_at < 12
    capfd.readouterr()

    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    encoder, status = sweep.pretrained_encoder(overrides, tmp_path, pretrain)
    output = capfd.readouterr()
    log = output.out + output.err
    assert status == 0 and encoder.is_file()
    assert f"resumed from {last} at iteration {stopped_at}" in log
    assert f"iteration {stopped_at + 1}/12" in log and "iteration 1/12" not in log
    assert load_checkpoint(last)["iteration"] == 12
