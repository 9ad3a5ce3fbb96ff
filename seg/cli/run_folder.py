"""Which folder a run writes into: a resumed run continues in its own run folder, and a
run that fails before it wrote anything leaves no folder behind."""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from seg.errors import UserError
from seg.files import read_run_file, write_file
from seg.run_lock import LOCK_NAME, holder_if_locked

# What Hydra writes into .hydra/ before the task function runs (besides the log file).
HYDRA_FILES = frozenset({"config.yaml", "hydra.yaml", "overrides.yaml"})


def resumed_run_folder(resume: object) -> Path | None:
    """The run folder that ``trainer.resume`` continues when it names one by path (as
    seg.engine.checkpoints.resume_path reads it): a folder holding ``checkpoints/last.pt``,
    or a checkpoint file in a run's ``checkpoints/``. None for false, true and auto (this
    run's own folder, whatever it is), and for paths that are no run's. Free of torch:
    ``hydra.run.dir`` asks for it before a command has loaded anything."""
    if not isinstance(resume, str) or resume == "auto":
        return None
    path = Path(resume)
    if path.is_dir():
        return path if (path / "checkpoints" / "last.pt").is_file() else None
    if path.is_file() and path.parent.name == "checkpoints":
        return path.parent.parent
    return None


def known_run_folder(cfg: DictConfig | None, argv: list[str]) -> Path | None:
    """The run folder a single run will write into, where it is known before Hydra makes
    it: the one ``trainer.resume`` continues, else ``hydra.run.dir`` from the command line.
    None for a new dated folder."""
    resumed = None if cfg is None else resumed_run_folder(OmegaConf.select(cfg, "trainer.resume"))
    if resumed is not None:
        return resumed
    given = [arg.split("=", 1)[1] for arg in argv if arg.startswith("hydra.run.dir=")]
    return Path(given[-1]) if given and given[-1] else None


def run_dir_for(resume: object, fresh: str) -> str:
    """``${seg.run_dir:RESUME,FRESH}`` (``hydra.run.dir`` in configs/hydra/default.yaml):
    the run folder that ``trainer.resume`` continues (a run folder, or a checkpoint in
    one), else ``fresh``, the new dated folder of a run of its own. Resuming into a new
    folder would leave best.pt behind and split the TensorBoard curves."""
    folder = resumed_run_folder(resume)
    return fresh if folder is None else str(folder)


def register_run_dir_resolver() -> None:
    """Make ``${seg.run_dir:...}`` known to OmegaConf (once per process)."""
    if not OmegaConf.has_resolver("seg.run_dir"):
        OmegaConf.register_new_resolver("seg.run_dir", run_dir_for)


def run_outputs(run_dir: Path) -> dict[Path, int]:
    """What shows that a run trained on: its checkpoints and metrics.json, each with its
    modification time. TensorBoard events do not count: a resume writes them from its
    first step, and drops them again when it resumes from the same checkpoint."""
    paths = [*run_dir.glob("checkpoints/*.pt"), run_dir / "metrics.json"]
    return {path: path.stat().st_mtime_ns for path in paths if path.is_file()}


# The run folder that the run starting in this process goes on in, what its .hydra/ held
# and what it had written: saved by the start checks (seg.cli.command.StartChecks, a Hydra
# callback, called once the config is composed), read back around the command.
_saved_before_start: list[tuple[Path, dict[Path, bytes], dict[Path, int]]] = []


# The composed config of the single run starting in this process (StartChecks records
# it): where its folder is once Hydra, whose own writes failed, no longer says.
_starting: list[DictConfig] = []


def note_starting_run(config: DictConfig) -> None:
    _starting[:] = [config]


def save_hydra_files(run_dir: Path) -> None:
    """Remember what ``run_dir/.hydra/`` holds and what the run wrote, before Hydra writes
    the command's config over them (see :func:`hydra_files_kept_unless_trained`)."""
    saved = {path: read_run_file(path, "the run folder's Hydra file")
             for path in sorted((run_dir / ".hydra").glob("*.yaml"))}
    _saved_before_start[:] = [(run_dir, saved, run_outputs(run_dir))]


def put_back_hydra_files(run_dir: Path, saved: dict[Path, bytes]) -> None:
    """Make ``run_dir/.hydra/`` hold what it held (``saved``) again: the files Hydra or
    seg (an earlier recipe, seg.training.keep_earlier_recipe) wrote since go, the others
    get their bytes back. One that cannot be is one line (a full disk), not a traceback
    hiding the error that stopped the run."""
    added = [path for path in (run_dir / ".hydra").glob("*.yaml") if path not in saved
             and (path.name in HYDRA_FILES or path.name.startswith("config_until_"))]
    try:
        for path in added:
            path.unlink()
        for path, content in saved.items():
            write_file(path, content)
    except (OSError, UserError) as error:
        print(f"error: could not put back {run_dir / '.hydra'} as it was ({error})",
              file=sys.stderr)


@contextmanager
def hydra_files_kept_unless_trained() -> Iterator[None]:
    """Around a command: where its run goes on in an earlier run's folder, Hydra writes the
    command's config over .hydra/ before the run starts. Should the run stop before it
    has trained on (saved a checkpoint or metrics.json), however it stops (a bad setting,
    a missing file, a bug's exception, a signal), the earlier files go back, so that
    .hydra/ keeps describing what trained the run (the log keeps the failure). A resume
    that trains keeps the new ones; seg.training.keep_earlier_recipe then keeps the
    earlier recipe."""
    _saved_before_start.clear()
    _starting.clear()
    try:
        yield
    except BaseException as stop:
        failed = not isinstance(stop, SystemExit) or stop.code not in (0, None)
        if failed and _saved_before_start:
            run_dir, saved, written = _saved_before_start[0]
            if run_outputs(run_dir) == written:
                put_back_hydra_files(run_dir, saved)
        raise


def holds_only_hydra_files(run_dir: Path, job_name: str) -> bool:
    """True when ``run_dir`` holds what Hydra wrote before the run started (``.hydra/``
    with its three files, the job's log) and the run's lock file, and nothing else. An
    empty folder is not one: Hydra wrote nothing there (a command that writes neither,
    into the working folder)."""
    entries = {path.name for path in run_dir.iterdir()}
    if not entries or not entries <= {".hydra", f"{job_name}.log", LOCK_NAME}:
        return False
    hydra_dir = run_dir / ".hydra"
    return not hydra_dir.is_dir() or {path.name for path in hydra_dir.iterdir()} <= HYDRA_FILES


def close_log_files_in(folder: Path) -> None:
    """Close and drop the logging handlers that write into ``folder`` (Hydra's log file)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        filename = getattr(handler, "baseFilename", None)
        if filename and Path(filename).resolve().is_relative_to(folder.resolve()):
            root.removeHandler(handler)
            with contextlib.suppress(OSError):  # its last lines on a full disk
                handler.close()


def this_run(cfg: DictConfig | None) -> tuple[Path, str, DictConfig | None] | None:
    """The run folder of the single run of this process, its job's name and its config:
    Hydra's, while its task runs; else the config the start checks saw (Hydra's own
    writes failed, or a signal came, before the task ran). None when Hydra started none."""
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        return Path(hydra_cfg.runtime.output_dir), hydra_cfg.job.name, cfg
    if _starting:
        config = _starting[0]
        return Path(str(config.hydra.run.dir)).absolute(), config.hydra.job.name, config
    return None


def starting_run_folder() -> Path:
    """This run's folder (see :func:`this_run`), or else the working folder."""
    started = this_run(None)
    return Path.cwd() if started is None else started[0]


def remove_unused_run_folder(cfg: DictConfig | None) -> None:
    """After a single run failed at start-up (a bad setting, a missing folder), remove the
    folder Hydra made for it if it holds nothing but Hydra's own files: the error is on
    stderr, and outputs/ keeps listing runs only. Never the folder a resumed run continues
    (it holds that run), nor a sweep's (the caller's business: a sweep's report lists its
    failed runs from their folders). Folders above it left empty go too."""
    started = this_run(cfg)
    if started is None:
        return  # not started by Hydra: no folder was made for this run
    run_dir, job_name, cfg = started
    resumed = resumed_run_folder(OmegaConf.select(cfg, "trainer.resume")
                                 if isinstance(cfg, DictConfig) else None)
    if resumed is not None and resumed.resolve() == run_dir.resolve():
        return
    if Path.cwd().resolve().is_relative_to(run_dir.resolve()):
        return  # hydra.run.dir=. (or above): never the working folder
    if not run_dir.is_dir() or not holds_only_hydra_files(run_dir, job_name):
        return
    if holder_if_locked(run_dir) is not None:
        return  # another run is starting in it
    close_log_files_in(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    remove_empty_folders_above(run_dir)


def remove_empty_folders_above(run_dir: Path) -> None:
    """Remove the folders above ``run_dir`` that are now empty (``outputs/<date>/``, and
    ``outputs/`` after a first run): only below the working folder, never outside it."""
    cwd = Path.cwd().resolve()
    for folder in run_dir.resolve().parents:
        if folder == cwd or not folder.is_relative_to(cwd):
            return
        try:
            folder.rmdir()
        except OSError:  # not empty: other runs are there
            return
