"""Resuming by folder (issue 40): ``seg-train trainer.resume=RUN trainer.max_iters=N``
composes the run's own config (its .hydra/overrides.yaml ahead of the command line), so a
folder-dataset run and a sweep's job resume with nothing else on the command line; a
change of what the checkpoint decides is refused naming the config group; and a longer
run goes on along the extended schedule, without a second warmup."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seg.cli.resume_config import resume_line, take_run_config
from seg.engine import PolyLR, Trainer, poly_factor
from seg.engine.loop import Run
from seg.engine.resume import ResumeCommand, refuse_changed_settings
from seg.engine.state import TrainingState
from seg.errors import BadValue
from seg.run_lock import LOCK_NAME
from tests.layouts import make_folder

SEG_TRAIN = [sys.executable, "-P", "-m", "seg.cli.train"]
# small and fast: 2 iterations of batch 2 on 48 px crops, one val batch
TINY = ["debug=tiny", "dataset.crop_size=48", "dataset.val_max_batches=1"]


def seg_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*SEG_TRAIN, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def resume(folder: Path) -> str:
    """``trainer.resume=FOLDER``, quoted for Hydra where the folder's name needs it (a
    sweep job's, while its name holds '=' or ',')."""
    return f"trainer.resume={folder}" if not set(str(folder)) & set("=,'") else \
        f"trainer.resume='{folder}'"


def iteration_of(run: Path) -> int:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["iteration"]


def logged_lr(run: Path) -> dict[int, float]:
    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return {event.step: event.value for event in events.Scalars("train/lr")}


def files_of(run: Path) -> dict[Path, bytes]:
    """Every file of ``run`` but its log (a failed start appends its error there) and its
    lock (whoever held it last)."""
    return {path: path.read_bytes() for path in sorted(run.rglob("*"))
            if path.is_file() and path.name not in ("train.log", LOCK_NAME)}


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder dataset whose classes are its own (background, crack, moss): not shapes'."""
    return make_folder(tmp_path_factory.mktemp("folder") / "data", splits=True)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, folder_data: Path) -> Path:
    """A sweep of two tiny jobs, one per upsampler, on the folder dataset."""
    folder = tmp_path_factory.mktemp("sweep") / "sweep"
    done = seg_train("-m", "model/upsampler=bilinear,transposed", *TINY, "dataset=folder",
                     f"dataset.root={folder_data}", f"hydra.sweep.dir={folder}",
                     cwd=folder.parent)
    assert done.returncode == 0, done.stderr
    return folder


def job_of(sweep: Path, upsampler: str) -> Path:
    """The sweep's job folder that trained with ``upsampler``."""
    return next(job for job in sorted(sweep.iterdir()) if (job / ".hydra").is_dir() and
                f"model/upsampler={upsampler}" in (job / ".hydra" / "overrides.yaml").read_text())


# -- the run's own config ------------------------------------------------------------------

def test_a_folder_dataset_run_resumes_with_nothing_but_its_folder(tmp_path: Path,
                                                                 folder_data: Path) -> None:
    first = seg_train(*TINY, "dataset=folder", f"dataset.root={folder_data}",
                      "hydra.run.dir=run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = seg_train("trainer.resume=run", "trainer.max_iters=4", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    run = tmp_path / "run"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]  # the same folder
    assert iteration_of(run) == 4
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["class_names"] == ["background", "crack", "moss"]  # the folder's, not shapes'
    assert json.loads((run / "metrics.json").read_text())["iterations"] == 4
    # Hydra records the composed command line: the run's overrides, then the resume's
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert overrides == [*TINY, "dataset=folder", f"dataset.root={folder_data}",
                         "trainer.resume=run", "trainer.max_iters=4"]
    # the schedule is stretched to 4 iterations from the checkpoint's iteration on
    lr = OmegaConf.load(run / ".hydra" / "config.yaml").optimizer.lr
    logged = logged_lr(run)
    for step in (3, 4):
        assert logged[step] == pytest.approx(lr * poly_factor(step, 4, 0.5), rel=1e-6), step
    log = (run / "train.log").read_text()
    assert "resumed at iteration 2 of 4: no warmup, poly decay to 0 at 4" in log


def test_a_sweep_job_resumes_in_its_own_folder(sweep: Path) -> None:
    job = job_of(sweep, "bilinear")
    before = sorted(path.name for path in sweep.iterdir())
    resumed = seg_train(resume(job), "trainer.max_iters=4", cwd=sweep.parent)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(path.name for path in sweep.iterdir()) == before  # no new folder
    assert iteration_of(job) == 4
    assert json.loads((job / "metrics.json").read_text())["iterations"] == 4
    config = torch.load(job / "checkpoints" / "last.pt", weights_only=True)["config"]
    assert config["model"]["upsampler"]["name"] == "bilinear"  # the job's, not the default
    assert config["dataset"]["class_names"] == ["background", "crack", "moss"]


def test_a_changed_group_choice_is_refused_naming_the_group(sweep: Path) -> None:
    job = job_of(sweep, "transposed")
    kept = files_of(job)
    refused = seg_train(resume(job), "trainer.max_iters=4", "model/upsampler=bilinear",
                        cwd=sweep.parent)
    assert refused.returncode == 1
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith("error: model/upsampler is transposed in the run, bilinear "
                               "here: a resumed run keeps its checkpoint's model"), lines[0]
    assert "drop model/upsampler=bilinear, or start a new run" in lines[0]
    assert files_of(job) == kept  # .hydra/ as it was, nothing trained


# -- what goes ahead of the command line ------------------------------------------------------

def a_run_folder(folder: Path, overrides: list[str], choices: dict[str, str | None]) -> Path:
    """A run folder as Hydra leaves one: .hydra/overrides.yaml and hydra.yaml's choices."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.pt").write_bytes(b"")
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    return folder


def test_the_run_overrides_go_ahead_of_the_command_lines_own(tmp_path: Path) -> None:
    run = a_run_folder(tmp_path / "run", [
        "model/upsampler=bilinear", "seed=3", "+extra=1", "trainer.resume=old",
        "trainer.rewind=true", "hydra.run.dir=x", "hydra/launcher=basic", "optimizer.lr=0.1"],
        {"model/upsampler": "bilinear", "dataset": "shapes"})
    argv = ["seg-train", "--cfg", "job", f"trainer.resume={run}", "seed=4", "extra=2",
            "trainer.max_iters=9"]
    take_run_config(argv)
    # the run's (hydra.*, its resume and rewind, and the seed given again left out) first;
    # +extra stays, so that the command line's extra=2 has a key to change
    assert argv == ["seg-train", "--cfg", "job", "model/upsampler=bilinear", "+extra=1",
                    "optimizer.lr=0.1", f"trainer.resume={run}", "seed=4", "extra=2",
                    "trainer.max_iters=9"]
    recorded = resume_line()
    assert recorded.folder == run and recorded.taken == tuple(argv[3:6])
    assert recorded.choices == {"model/upsampler": "bilinear", "dataset": "shapes"}
    assert recorded.given == {"seed": "seed=4", "extra": "extra=2",
                              "trainer.max_iters": "trainer.max_iters=9"}
    untouched = ["seg-train", "trainer.resume=auto", "seed=4"]  # no folder named: as it was
    take_run_config(untouched)
    assert untouched == ["seg-train", "trainer.resume=auto", "seed=4"]
    assert resume_line().folder is None and resume_line().given == {"seed": "seed=4"}
    take_run_config(["seg-train", "seed=4"])  # no resume
    assert resume_line() is None


# -- what a resume refuses ----------------------------------------------------------------------

STORED = {"config": {"model": {"upsampler": {"name": "bilinear", "channelwise": True}},
                     "dataset": {"class_names": ["background", "crack"]}, "seed": 0}}
NOW = {"model": {"upsampler": {"name": "transposed", "channelwise": False}},
       "dataset": {"class_names": ["background", "crack"]}, "seed": 0}


def refusal(config: dict, command: ResumeCommand | None) -> str:
    with pytest.raises(BadValue) as refused:
        refuse_changed_settings(STORED, config, command)
    return str(refused.value)


def test_a_refusal_says_drop_only_an_override_the_command_line_gave() -> None:
    choices = {"model/upsampler": "bilinear", "dataset": "folder"}
    changed = {**choices, "model/upsampler": "transposed"}
    given = refusal(NOW, ResumeCommand(choices, changed,
                                       {"model/upsampler": "model/upsampler=transposed"}))
    assert given.startswith("model/upsampler is bilinear in the run, transposed here: ")
    assert "drop model/upsampler=transposed, or start a new run" in given
    assert "(and" not in given  # the group's own keys are not "more" settings
    # the group changed without the command line choosing it (a default changed since)
    unasked = refusal(NOW, ResumeCommand(choices, changed, {"trainer.max_iters": "x=1"}))
    assert "resume with model/upsampler=bilinear" in unasked and "drop" not in unasked
    # a setting changed with no override of the command line behind it (classes.yaml edited)
    classes = {**STORED["config"], "dataset": {"class_names": ["background", "moss"]}}
    edited = refusal(classes, ResumeCommand(choices, choices, {}))
    assert edited.startswith("dataset.class_names is ['background', 'moss'] here but "
                             "['background', 'crack'] in the run being resumed")
    assert "drop" not in edited
    named = refusal({**STORED["config"], "seed": 5}, ResumeCommand(choices, choices,
                                                                   {"seed": "seed=5"}))
    assert named.startswith("seed=5 but the run being resumed has 0") and "drop seed=5" in named


# -- the schedule of a longer run ---------------------------------------------------------------

def resumed_lr(schedule: int, stopped_at: int, resumed_iters: int,
               caplog: pytest.LogCaptureFixture) -> tuple[float, float, PolyLR]:
    """Train a one-weight model on an auto-warmup schedule of ``schedule`` iterations,
    stopped at ``stopped_at``, then restore its checkpoint, as Trainer.restore does, onto
    a schedule of ``resumed_iters``: the learning rate the last iteration before the
    checkpoint left, the one the first resumed iteration trains at, and the schedule."""
    def parts(total: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, PolyLR]:
        model = torch.nn.Linear(1, 1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
        return model, optimizer, PolyLR(optimizer, total, power=0.5, warmup_iters="auto")

    model, optimizer, scheduler = parts(schedule)
    for _ in range(stopped_at):
        optimizer.step()
        scheduler.step()
    left = optimizer.param_groups[0]["lr"]
    state = TrainingState(iteration=stopped_at)
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "scheduler": scheduler.state_dict(), "scaler": {}, **state.state_dict(),
                  "path": "last.pt"}
    model, optimizer, scheduler = parts(resumed_iters)
    run = Run(model, optimizer, scheduler, None, None, TrainingState(), None, None, [])
    with caplog.at_level(logging.INFO, logger="seg.engine.schedule"):
        Trainer(device="cpu").restore(run, checkpoint)
    return left, optimizer.param_groups[0]["lr"], scheduler


def test_a_longer_run_goes_on_along_the_extended_schedule(caplog) -> None:
    # 20 iterations warm up over 2; a tenth of 400 would be 40, past the resumed 20
    left, lr, scheduler = resumed_lr(20, 20, 400, caplog)
    assert left == 0.0  # where the 20-iteration schedule ended
    assert lr == pytest.approx(0.01 * poly_factor(20, 400, 0.5))  # the extended one's
    assert lr > 0.01 * 0.1  # above the warmup's first rate: no second warmup
    assert "resumed at iteration 20 of 400: warmup done, poly decay to 0 at 400" in caplog.text
    scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(0.01 * poly_factor(21, 400, 0.5))


def test_a_resume_of_the_same_schedule_goes_on_exactly(caplog) -> None:
    left, lr, _ = resumed_lr(20, 10, 20, caplog)
    assert lr == left  # the rate an uninterrupted run trains its 11th iteration at
    # stopped in its warmup (a tenth of 400: 40 iterations), it warms up on to 40
    left, lr, scheduler = resumed_lr(400, 10, 400, caplog)
    assert lr == left == pytest.approx(0.01 * poly_factor(10, 400, 0.5, warmup_iters=40))
    assert "resumed at iteration 10 of 400: warmup until iteration 40" in caplog.text
    scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(
        0.01 * poly_factor(11, 400, 0.5, warmup_iters=40))
