"""A run's folder: a resumed run goes on in its own folder, a run that fails at start-up
leaves none behind, and a sweep's failed run ends it with one line, as a single run does."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seg.cli.command import CONFIG_MODULE
from seg.cli.run_folder import resumed_run_folder, run_dir_for

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SEG_TRAIN = [sys.executable, "-m", "seg.cli.train"]
TINY = ["debug=tiny", "dataset.crop_size=48", "dataset.val_max_batches=1"]


def seg_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*SEG_TRAIN, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def loss_steps(run_dir: Path) -> list[int]:
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return [event.step for event in events.Scalars("train/loss")]


def fake_run(folder: Path) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.pt").write_bytes(b"")
    return folder


# -- resuming ---------------------------------------------------------------------------------

def test_a_run_folder_or_its_checkpoint_names_the_folder_to_continue(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run")
    fresh = "outputs/2030-01-01/00-00-00"
    assert resumed_run_folder(str(run)) == run
    assert resumed_run_folder(str(run / "checkpoints" / "last.pt")) == run
    assert run_dir_for(str(run / "checkpoints" / "last.pt"), fresh) == str(run)
    elsewhere = tmp_path / "weights.pt"
    elsewhere.write_bytes(b"")
    for resume in (False, True, "auto", str(tmp_path / "missing"), str(tmp_path), str(elsewhere)):
        assert run_dir_for(resume, fresh) == fresh, resume  # a run of its own


def test_hydra_puts_a_resumed_run_into_its_own_folder(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run")
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        resumed = compose(config_name="train", overrides=[f"trainer.resume={run}"],
                          return_hydra_config=True)
        fresh = compose(config_name="train", return_hydra_config=True)
    assert resumed.hydra.run.dir == str(run)
    assert fresh.hydra.run.dir.startswith("outputs/")
    # a command whose config has no trainer gets a dated folder as well
    other = OmegaConf.create({"hydra": OmegaConf.load(CONFIGS / "hydra" / "default.yaml")})
    assert other.hydra.run.dir.startswith("outputs/") and other.hydra.run.dir != "outputs/"


def test_resume_continues_in_the_run_folder(tmp_path: Path, shapes_root: Path) -> None:
    data = f"dataset.root={shapes_root}"
    first = seg_train(*TINY, data, "hydra.run.dir=run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = seg_train(*TINY, data, "trainer.resume=run/checkpoints/last.pt",
                        "trainer.max_iters=4", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    run = tmp_path / "run"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]  # no new folder
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 4
    assert (run / "checkpoints" / "best.pt").is_file()
    assert json.loads((run / "metrics.json").read_text())["iterations"] == 4
    assert sorted(loss_steps(run)) == [1, 2, 3, 4]  # one curve, no step twice
    log = (run / "train.log").read_text()
    assert "iteration 2/2: loss" in log and "iteration 4/4: loss" in log  # appended
    # Hydra wrote the resume's config over .hydra/config.yaml; the first one is kept
    assert OmegaConf.load(run / ".hydra" / "config.yaml").trainer.max_iters == 4
    earlier = OmegaConf.load(run / ".hydra" / "config_until_iteration_2.yaml")
    assert earlier.trainer.max_iters == 2 and earlier.trainer.resume is False
    # a resume that fails at start-up leaves the run as it was, .hydra/ included
    kept = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()
            and path.name != "train.log"}
    failed = seg_train(*TINY, data, "trainer.resume=run", "trainer.log_every=0", cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1].startswith("error: trainer.log_every")
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()
            and path.name != "train.log"} == kept
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]
    assert "error: trainer.log_every" in (run / "train.log").read_text()  # the log says why


# -- failures at start-up -----------------------------------------------------------------------

def test_a_folder_dataset_without_a_root_is_one_line_and_no_folder(tmp_path: Path) -> None:
    result = seg_train("dataset=folder", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: dataset.root is not set: pass dataset.root=PATH/TO/FOLDER"]
    assert list(tmp_path.iterdir()) == []  # neither outputs/<date>/<time> nor outputs/


@pytest.mark.parametrize("failure", [
    "dataset.root={tmp}/nowhere",  # a missing folder
    "trainer.max_iters=-1",  # a bad setting, found once Hydra made the run folder
])
def test_a_run_that_fails_at_start_up_leaves_no_folder(tmp_path: Path, failure: str) -> None:
    (tmp_path / "outputs" / "earlier").mkdir(parents=True)  # others' runs stay
    result = seg_train("debug=tiny", failure.format(tmp=tmp_path), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert [path.name for path in (tmp_path / "outputs").iterdir()] == ["earlier"]


# -- sweeps -----------------------------------------------------------------------------------

def test_a_failed_sweep_run_ends_the_sweep_with_its_one_line_error(tmp_path: Path) -> None:
    result = seg_train("-m", "dataset=folder", "debug=tiny", f"hydra.sweep.dir={tmp_path}/sweep",
                       cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    line = "error: dataset.root is not set: pass dataset.root=PATH/TO/FOLDER"
    assert result.stderr.strip().splitlines()[-1] == line
    # the failed run's folder stays: the sweep's report lists it as failed
    assert len(list((tmp_path / "sweep").glob("*/.hydra/overrides.yaml"))) == 1


@pytest.fixture
def hydra_run_in(tmp_path: Path, monkeypatch):
    """Make HydraConfig say that a single run writes into ``folder`` (as @hydra.main does),
    with ``tmp_path`` as the working folder."""
    from hydra.core.hydra_config import HydraConfig

    monkeypatch.chdir(tmp_path)

    def started_in(folder: Path) -> None:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            cfg = compose(config_name="train", return_hydra_config=True)
        cfg.hydra.runtime.output_dir = str(folder)
        cfg.hydra.job.name = "train"
        HydraConfig.instance().set_config(cfg)

    yield started_in
    HydraConfig.instance().cfg = None


def hydra_files(folder: Path) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (folder / ".hydra" / name).write_text("{}\n")
    (folder / "train.log").write_text("error: ...\n")
    return folder


def test_only_a_folder_of_hydra_files_is_removed(tmp_path: Path, hydra_run_in,
                                                 monkeypatch) -> None:
    from seg.cli.run_folder import remove_unused_run_folder

    unused = hydra_files(tmp_path / "outputs" / "day" / "time")
    hydra_run_in(unused)
    remove_unused_run_folder(None)
    assert list(tmp_path.iterdir()) == []  # with the folders above it, left empty
    trained = hydra_files(tmp_path / "run")
    (trained / "metrics.json").write_text("{}")
    hydra_run_in(trained)
    remove_unused_run_folder(None)
    assert (trained / "metrics.json").is_file()
    working = hydra_files(tmp_path / "work")  # hydra.run.dir=.: never the working folder
    monkeypatch.chdir(working)
    hydra_run_in(working)
    remove_unused_run_folder(None)
    assert (working / "train.log").is_file()
