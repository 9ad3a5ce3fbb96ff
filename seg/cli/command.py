"""The plumbing every command shares: where the configs are, the argument parser of the
commands that read more than overrides, the checks before Hydra writes a run folder, the
user's own modules (``imports=``), the start-up signals, the decorators that run a
command so that whatever goes wrong ends as one line (seg.cli.errors says which), and
what quiets the Hydra plugins' log lines."""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from hydra.errors import (
    ConfigCompositionException,
    OverrideParseException,
    SearchPathException,
)
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from seg.cli.errors import (
    RunFailed,
    config_error_line,
    disk_full,
    disk_full_line,
    interpolation_line,
    interrupted,
    refuse,
    report,
    stop_or_fail,
    stopped_by,
)
from seg.cli.help_text import register_settings_resolver
from seg.cli.resume_config import take_run_config
from seg.cli.run_folder import (
    hydra_files_kept_unless_trained,
    known_run_folder,
    note_starting_run,
    register_run_dir_resolver,
    remove_unused_run_folder,
    save_hydra_files,
)
from seg.cli.sweeps import register_run_name_resolver
from seg.errors import UserError
from seg.files import cannot_write_in, first_existing
from seg.resolvers import register_resolvers
from seg.run_lock import holder_if_locked, in_use_message
from seg.text import escape_logged_text, printable

# seg.engine and seg.models (torch) are imported where they are used: a command's --help
# then does not spend seconds loading them.

# The repository's configs/, which pyproject ships inside the wheel as this package.
CONFIG_MODULE = "seg.configs"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"

register_resolvers()  # ${seg.encoder_mean:...} and the like in configs/dataset/
register_run_dir_resolver()  # ${seg.run_dir:...}: hydra.run.dir in configs/hydra/default.yaml
register_run_name_resolver()  # ${seg.run_name:...}: hydra.sweep.subdir, there too
register_settings_resolver(CONFIG_MODULE)  # ${seg.settings_help:...}: configs/hydra/help/


class CommandLine(argparse.ArgumentParser):
    """The argument parser of the commands that read more than overrides (seg-compare,
    seg-data): a malformed command line is one line and exit status 1, as every user
    error of every seg command (argparse's own is a usage block and 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"error: {message}: see {self.prog} --help\n")


def module_command(module: str, *args: str) -> list[str]:
    """The command that runs ``python -m module args`` in a child process, the current
    folder kept off its sys.path (``-P``): ``-m`` alone puts it first, so a ``yaml.py`` in
    the folder a command was started from would run in place of PyYAML."""
    return [sys.executable, "-P", "-m", module, *args]


def exit_on_user_error(main: Callable) -> Callable:
    """Run a command's task (``main(cfg)``, inside ``@hydra.main``): the user's modules
    imported first (:func:`import_user_modules`), a user error printed as one line on
    stderr and exit 1 instead of a traceback; a run that failed before it wrote anything
    leaves no run folder.

    In a sweep the error is printed and the run is recorded as failed
    (seg.cli.errors.RunFailed): Hydra goes on with the others, then repeats the line and
    exits 1, again without a traceback. A stop signal (``TrainingInterrupted``: the
    checkpoint is saved) exits with 128 + the signal's number, ending a sweep too; so does
    a Ctrl-C before the training loop took the signal over (seg.cli.errors.interrupted).
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        cfg = args[0] if args else None
        escape_logged_text()  # Hydra has set up the log handlers by now
        try:
            import_user_modules(cfg)
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            interrupted(cfg, StartUpSignals.received)
        except Exception as error:
            stop_or_fail(error, cfg)
            raise  # not the user's: a bug in seg keeps its traceback

    return wrapper


def import_user_modules(cfg: object) -> None:
    """Import the modules the config's ``imports`` names (``imports=[my_parts]``), so that
    the parts they register where they are defined (an encoder, a dataset reader, ...)
    are in the catalogues before anything is built: mmsegmentation's ``custom_imports``.
    A module is looked for in the current folder first, as ``python -m`` does. Only the
    user's own config names them; a checkpoint's stored ``imports`` are never read (it is
    data), so seg-eval, seg-predict and seg-export take ``imports=[...]`` again."""
    names = OmegaConf.select(cfg, "imports", default=None) if isinstance(cfg, DictConfig) \
        else None
    if names is not None and not isinstance(names, ListConfig):
        raise UserError(f"imports must be a list of module names, got {printable(str(names))!r}"
                        ": write imports=[my_parts]")
    for name in names or ():
        name = module_name(name)
        added = os.getcwd() not in sys.path
        if added:
            sys.path.insert(0, os.getcwd())
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name is None or not name.startswith(error.name):
                raise  # the module itself imports something missing: its own traceback
            raise UserError(f"imports: no module {printable(name)} here: put {name}.py in "
                            f"the current folder ({os.getcwd()}) or on PYTHONPATH, or "
                            "install its package") from None
        finally:
            if added:
                sys.path.remove(os.getcwd())


def module_name(name: object) -> str:
    """``name`` when it is an absolute module name (``my_parts``, ``lab.parts``): a
    relative one (``.foo``) has no package to be relative to, and an empty one is none."""
    if not (isinstance(name, str) and all(part.isidentifier() for part in name.split("."))):
        raise UserError(f"imports: {printable(str(name))!r} is not a module name: give the "
                        "dotted name of a module, e.g. imports=[my_parts] for my_parts.py in "
                        "the current folder")
    return name


class StartUpSignals:
    """SIGTERM while a command starts (a job cancelled, a ``kill``), before the training
    loop takes the stop signals over (seg.engine.signals.StopSignals), ends it as a Ctrl-C
    does, as a KeyboardInterrupt: what was begun is undone (a run folder that holds
    nothing, the earlier .hydra/ files) and one line says so. ``received`` is the signal
    that stopped it, for that line and the exit status."""

    received: int = signal.SIGINT

    @staticmethod
    def install() -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # a launcher's own stays
            signal.signal(signal.SIGTERM, stop_at_once)


def stop_at_once(signum: int, frame: object) -> NoReturn:
    StartUpSignals.received = signum
    raise KeyboardInterrupt


# The training loop hands a signal to the handler it found once it has saved
# (StopSignals.forward, for submitit's requeue); this one would stop it before it raised
# its own TrainingInterrupted, so it is marked to be left out.
stop_at_once.only_before_training = True


def interrupts_reported(config_name: str) -> Callable[[Callable], Callable]:
    """Decorates a command: a Ctrl-C while it starts, before Hydra runs the task (which
    reports its own, seg.cli.errors.interrupted), is one line and exit status 130.
    Nothing has been written then, but where Hydra made a run folder, it goes."""
    started = "training" if config_name == "train" else f"seg-{config_name}"

    def decorate(command: Callable[[], object]) -> Callable[[], object]:
        @functools.wraps(command)
        def reported() -> object:
            StartUpSignals.install()
            try:
                return command()
            except KeyboardInterrupt:
                signum = StartUpSignals.received
                print(f"{stopped_by(signum)} before {started} started; nothing was "
                      "written", file=sys.stderr)
                remove_unused_run_folder(None)
                sys.exit(128 + signum)

        return reported

    return decorate


def check_run_dir(cfg: DictConfig) -> None:
    """Hydra makes ``hydra.run.dir`` and writes .hydra/ into it before the command runs,
    and reports a failure there as a traceback: try it first (a file in the way, a folder
    that cannot be written: /proc, a read-only disk) for one line naming the setting."""
    try:
        run_dir = Path(str(OmegaConf.select(cfg, "hydra.run.dir", throw_on_missing=True)))
    except InterpolationResolutionError as error:
        refuse(interpolation_line(error).removeprefix("error: "))
    folder = first_existing(run_dir)  # where Hydra's mkdir begins
    if not folder.is_dir():
        refuse(f"hydra.run.dir={run_dir}: {folder} is not a folder: choose another "
               "hydra.run.dir")
    if folder == run_dir and OmegaConf.select(cfg, "hydra.output_subdir") is None:
        return  # there, and Hydra writes nothing into it (seg-predict's, seg-eval's ".")
    reason = cannot_write_in(folder)
    if reason is not None:
        refuse(f"hydra.run.dir={run_dir}: cannot make a folder in {folder} ({reason}): "
               "choose a hydra.run.dir where you can write")


class StartChecks(Callback):
    """Checks on the config Hydra composed, before it makes the run folder and writes
    .hydra/ into it (``hydra.callbacks.start_checks`` in every command's config): a folder
    that cannot be made is one line (:func:`check_run_dir`); a folder another run holds
    is refused, its files untouched; what .hydra/ held in a folder a run goes on in is
    saved, to go back should the run fail before it trains
    (seg.cli.run_folder.hydra_files_kept_unless_trained). So the config is composed once
    per run, by Hydra, and nothing is written before these checks."""

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        note_starting_run(config)
        check_run_dir(config)
        folder = known_run_folder(config, sys.argv[1:])
        if folder is not None and (holder := holder_if_locked(folder)) is not None:
            refuse(in_use_message(folder, holder))  # the run in it owns its files
        if folder is not None:
            try:
                save_hydra_files(folder)
            except UserError as error:  # a .hydra/ file that is not one (a FIFO, huge)
                refuse(str(error))


def hydra_command(config_name: str, help_config: str | None = None
                  ) -> Callable[[Callable], Callable]:
    """Decorates a ``@hydra.main`` entry point: an error of the command line (a misspelt
    key, an unknown option, a malformed override), a Ctrl-C while it starts and a sweep's
    failed run are each one line and exit status 1 (130 for Ctrl-C), no traceback.

    ``help_config``: the configs/hydra/help/ option its ``--help`` prints, for a command
    that composes another's config (seg-pretrain: ``train``'s, whose defaults choose
    seg-train's help)."""

    def decorate(hydra_main: Callable[[], object]) -> Callable[[], object]:
        @functools.wraps(hydra_main)
        @interrupts_reported(config_name)
        def command() -> object:
            # a log line that a full disk refuses is lost, not a traceback on stderr
            # that buries the one line saying so
            logging.raiseExceptions = False
            if help_config is not None:
                ask_help_of(help_config)
            if config_name == "train":  # trainer.resume=RUN composes RUN's own config
                take_run_config(sys.argv)
            with hydra_files_kept_unless_trained():  # a run that fails at once
                return without_tracebacks(hydra_main)

        return command

    return decorate


HELP_FLAGS = ("--help", "-h")  # Hydra's; --hydra-help is Hydra's own and stays so


def ask_help_of(help_config: str) -> None:
    """Where the command line asks for ``--help``, have Hydra print ``help_config``'s
    (an override of the ``hydra/help`` group, ahead of the user's own overrides, which
    Hydra reads from ``sys.argv``). A run's command line is left as it is."""
    if any(arg in HELP_FLAGS for arg in sys.argv[1:]):
        sys.argv[1:1] = [f"hydra/help={help_config}"]


# What Hydra raises while it composes the config or expands a sweep: the command line's
# fault. (InstantiationException, also compact, comes from inside a run.)
COMMAND_LINE_ERRORS = (ConfigCompositionException, OverrideParseException,
                       SearchPathException)


def without_tracebacks(hydra_main: Callable[[], object]) -> object:
    """Run ``hydra_main`` so that an error of the command line, and a sweep's failed run,
    end it with one line and exit status 1, as a single run's own errors do. Hydra would
    print them over several lines (or, for a :class:`RunFailed`, add a line about
    HYDRA_FULL_ERROR): HYDRA_FULL_ERROR=1 makes it raise them instead, to be reported
    here. Errors of seg itself (bugs) keep their traceback. Where the user set
    HYDRA_FULL_ERROR, Hydra's reporting stays as it is."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return hydra_main()
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return hydra_main()
    except RunFailed as failed:
        # again at the end (above it, Hydra names the failed run's overrides): a launcher
        # that runs jobs elsewhere (SLURM) shows their own stderr only in their logs
        print(failed, file=sys.stderr)
        sys.exit(1)
    except COMMAND_LINE_ERRORS as error:
        refuse(config_error_line(error))
    except OSError as error:
        if not disk_full(error):
            raise
        # Hydra's own writes (.hydra/, the log) before the command ran: its folder goes
        report(disk_full_line(error))
        remove_unused_run_folder(None)
        sys.exit(1)
    finally:
        del os.environ["HYDRA_FULL_ERROR"]


# -- the Hydra plugins' log lines -----------------------------------------------------------


class ShortJoblibLine(logging.Filter):
    """Hydra's joblib launcher logs the whole call it makes as a sweep starts
    (``Joblib.Parallel(n_jobs=2,backend=loky,prefer=processes,...) is launching 6 jobs``):
    one short line says what matters in it. Put on the launcher's logger by
    configs/hydra/default.yaml (``hydra_logging``)."""

    CALL = re.compile(r"Joblib\.Parallel\((?P<arguments>.*)\) is launching (?P<jobs>\d+) jobs")

    def filter(self, record: logging.LogRecord) -> bool:
        call = self.CALL.fullmatch(record.getMessage())
        if call is not None:
            found = re.search(r"(?:^|,)n_jobs=(-?\d+)", call["arguments"])
            runs = int(call["jobs"])
            record.msg = (f"joblib: launching {runs} run{'s' * (runs != 1)}, "
                          f"{side_by_side(int(found[1]) if found else -1)}")
            record.args = ()
        return True


def side_by_side(n_jobs: int) -> str:
    """How many runs joblib's ``n_jobs`` runs at a time, in words (-1: every core)."""
    if n_jobs == -1:
        return "one per core"
    return f"{n_jobs} at a time" if n_jobs > 0 else f"n_jobs={n_jobs}"


class PlainOptunaLogs(Callback):
    """Optuna prints its log lines through a handler of its own, on stderr in colour, the
    escape codes written even into a file (``seg-train -m ... > search.log``): hand them to
    Hydra's handlers instead, plain, as Hydra's own lines. A callback of the searches in
    configs/hparams_search/: ``on_multirun_start`` runs before the sweeper is built and
    creates the study, the first thing Optuna logs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        import optuna  # the sweeper imports it next

        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()
