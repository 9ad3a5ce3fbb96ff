"""What the entry points share: turning config nodes into objects, one-line errors."""

from __future__ import annotations

import argparse
import errno
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

from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    CompactHydraException,
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
    SearchPathException,
)
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    InterpolationToMissingValueError,
    MissingMandatoryValue,
)

from seg.cli.run_folder import (
    holds_only_hydra_files,
    hydra_files_kept_unless_trained,
    known_run_folder,
    note_starting_run,
    register_run_dir_resolver,
    remove_unused_run_folder,
    save_hydra_files,
    starting_run_folder,
)
from seg.cli.sweeps import register_run_name_resolver
from seg.data.resolvers import register_resolvers
from seg.errors import UserError
from seg.files import cannot_write_in, first_existing
from seg.run_lock import holder_if_locked, in_use_message
from seg.text import escape_logged_text, printable

# seg.engine and seg.models (torch) are imported where they are used: a command's --help
# then does not spend seconds loading them.

# The repository's configs/, which pyproject ships inside the wheel as this package.
CONFIG_MODULE = "seg.configs"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"

# What the user can fix: one line, no traceback. Besides seg's own UserError, the
# operating system's word on a path (a missing file, no permission). Anything else is a
# bug in seg and keeps its traceback.
USER_ERRORS = (UserError, FileNotFoundError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError)
register_resolvers()  # ${seg.imagenet_mean:} and the like in configs/dataset/
register_run_dir_resolver()  # ${seg.run_dir:...}: hydra.run.dir in configs/hydra/default.yaml
register_run_name_resolver()  # ${seg.run_name:...}: hydra.sweep.subdir, there too


class CommandLine(argparse.ArgumentParser):
    """The argument parser of the commands that read more than overrides (seg-compare,
    seg-data): a malformed command line is one line and exit status 1, as every user
    error of every seg command (argparse's own is a usage block and 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"error: {message}: see {self.prog} --help\n")


def one_line(message: str) -> str:
    """A DataLoader worker's error comes back as "Caught X in DataLoader worker ...
    Original Traceback ...": the user needs only its last line, the original message."""
    if "Original Traceback" not in message:
        return message
    last = message.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


def report(line: str) -> None:
    """``line`` on stderr, and in the run's log file (Hydra's file handler), so that the
    log of a run that failed or stopped says why."""
    line = printable(line)  # one line, whatever a file or a setting put into it
    print(line, file=sys.stderr)
    record = logging.makeLogRecord({"name": "seg", "levelno": logging.ERROR,
                                    "levelname": "ERROR", "msg": line})
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class RunFailed(CompactHydraException):
    """A sweep's run stopped by a user error, already reported when it happened. Hydra
    records the run as failed and goes on with the others; at the end it prints this one
    line (a compact exception: no traceback) under the failed run's overrides, and exits 1.
    One positional argument, so that a launcher may pickle it back from another process."""


def missing_value_line(error: MissingMandatoryValue | InterpolationToMissingValueError) -> str:
    """What to do about a mandatory setting left at ``???`` (read directly, or through an
    interpolation, whose message names it): a folder for the roots, else a value."""
    key = error.full_key
    if isinstance(error, InterpolationToMissingValueError):
        key = str(error).split("Missing mandatory value: ", 1)[-1].split()[0]
    value = "PATH/TO/FOLDER" if key.rsplit(".", 1)[-1].endswith("root") else "VALUE"
    return f"error: {key} is not set: pass {key}={value}"


def fail(line: str, cfg: object) -> NoReturn:
    """Report ``line``; exit 1, leaving no run folder that holds nothing (see
    ``remove_unused_run_folder``). In a sweep, raise :class:`RunFailed` instead."""
    report(line)
    if in_sweep():
        raise RunFailed(line) from None
    remove_unused_run_folder(cfg if isinstance(cfg, DictConfig) else None)
    sys.exit(1)


def exit_on_user_error(main: Callable) -> Callable:
    """Print a user error as one line on stderr and exit 1 instead of a traceback; a run
    that failed before it wrote anything leaves no run folder.

    In a sweep the error is printed and the run is recorded as failed (:class:`RunFailed`):
    Hydra goes on with the others, then repeats the line and exits 1, again without a
    traceback. A stop signal (``TrainingInterrupted``: the checkpoint is saved) exits with
    128 + the signal's number, ending a sweep too; so does a Ctrl-C before the training
    loop took the signal over (:func:`interrupted`).
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        cfg = args[0] if args else None
        escape_logged_text()  # Hydra has set up the log handlers by now
        try:
            import_user_modules(cfg)
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            interrupted(cfg)
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


def stop_or_fail(error: Exception, cfg: object) -> None:
    """Exit as :func:`exit_on_user_error` says when ``error`` is a stop signal's or the
    user's; return when it is neither (a bug)."""
    from seg.engine import TrainingInterrupted  # torch: only once a command runs

    if isinstance(error, TrainingInterrupted):
        report(f"stopped: {error}")
        # the shell's convention for "ended by signal N"; in a sweep too, which a
        # signal stops as a whole (SystemExit passes Hydra's per-run error handling)
        sys.exit(128 + error.signum)
    line = user_error_line(error, cfg)
    if line is not None:
        fail(line, cfg)


def user_error_line(error: Exception, cfg: object) -> str | None:
    """The one line for an error the user can fix (a setting, a file, an override), or
    None for a bug."""
    if isinstance(error, MissingMandatoryValue | InterpolationToMissingValueError):
        return missing_value_line(error)
    cause = root_cause(error)
    if disk_full(cause):
        return disk_full_line(cause)
    if isinstance(cause, USER_ERRORS):
        return "error: " + one_line(str(cause.args[0]) if len(cause.args) == 1 else str(cause))
    if isinstance(error, InterpolationResolutionError):
        return interpolation_line(error)
    if isinstance(error, ConfigAttributeError | ConfigKeyError):
        return deleted_key_line(error.full_key or "")
    if isinstance(error, InstantiationException) and isinstance(cause, TypeError):
        return argument_line(error, cause, cfg)
    return None


# A write refused for want of room: a full disk, a file-size limit, a quota.
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL


def disk_full_line(error: OSError) -> str:
    """A write that found no room, by whichever code (Hydra's .hydra/ files, the lock,
    a log), in seg.files' words: the path (the run folder where a failed write or close
    names none), the reason and the free space."""
    from seg.files import write_failed

    path = Path(os.fsdecode(error.filename)) if error.filename else starting_run_folder()
    return f"error: {write_failed(path, error)}"


def root_cause(error: BaseException) -> BaseException:
    """Hydra wraps errors raised in constructors, OmegaConf those raised in resolvers
    (``${seg.folder_classes:...}`` reading a bad classes.yaml; raised while handling the
    original, not from it): the user needs the original one."""
    while True:
        if isinstance(error, InstantiationException) and error.__cause__ is not None:
            error = error.__cause__
        elif isinstance(error, InterpolationResolutionError) and (
                error.__cause__ or error.__context__) is not None:
            error = error.__cause__ or error.__context__
        else:
            return error


def interpolation_line(error: InterpolationResolutionError) -> str:
    """A setting whose ``${...}`` cannot be resolved: an unset environment variable
    (``${oc.env:NAME}``), a key that is not there (or that an override deleted)."""
    key = error.full_key or "a setting"
    cause = root_cause(error)
    message = str(cause).splitlines()[0].strip("\"'")
    variable = re.fullmatch(r"Environment variable '(.+)' not found", message)
    if variable:
        name = printable(variable[1])
        return (f"error: {key}: the environment variable {name} is not set: export "
                f"{name}=VALUE, or give a default, ${{oc.env:{name},DEFAULT}}")
    missing = re.fullmatch(r"Interpolation key '(.+)' not found", message)
    if missing:
        return deleted_key_line(missing[1]) or (
            f"error: {key}: its ${{{printable(missing[1])}}} names no setting: fix that "
            "interpolation (--cfg job prints every key)")
    return f"error: {key}: cannot resolve its value ({printable(message)}): fix that setting"


def task_overrides() -> list[str]:
    """The command line's overrides of this run (a sweep's: this run's values), as typed:
    unresolved (``seed=${nosuch}`` is one)."""
    if not HydraConfig.initialized():
        return []
    return [str(o) for o in OmegaConf.to_container(HydraConfig.get().overrides.task)]


def deleted_key_line(key: str) -> str | None:
    """``key``, which seg reads, was deleted by an override (``~trainer``,
    ``~trainer.max_iters``); None when no override did (a bug in seg)."""
    for override in task_overrides():
        deleted = override[1:].split("=", 1)[0] if override.startswith("~") else None
        if deleted and (key == deleted or key.startswith(f"{deleted}.")):
            return (f"error: {key} is needed, but the override {override} deleted it: drop "
                    f"{override} (to change a setting, give it a value: {deleted}=...)")
    return None


def argument_line(error: InstantiationException, cause: TypeError, cfg: object) -> str | None:
    """A config node whose keys its ``_target_`` does not take (``+trainer.foo=1``), or
    that lacks one it needs; None for any other TypeError (a bug in seg)."""
    node = re.search(r"full_key: (\S+)", str(error))
    target = re.search(r"target '([^']+)'", str(error))
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
    missing = re.search(r"missing \d+ required \w+ arguments?: '(\w+)'", str(cause))
    if node is None or (unexpected or missing) is None:
        return None
    where = f"{node[1]} ({target[1]})" if target else node[1]
    if missing:
        return f"error: {node[1]}.{missing[1]} is not set: {where} needs it; pass " \
               f"{node[1]}.{missing[1]}=VALUE"
    key = f"{node[1]}.{unexpected[1]}"
    given = [o for o in task_overrides() if o.lstrip("+").split("=", 1)[0] == key]
    settings = OmegaConf.select(cfg, node[1]) if isinstance(cfg, DictConfig) else None
    known = [k for k in (settings or {}) if not str(k).startswith("_") and k != unexpected[1]]
    return (f"error: {key} is not a setting of {where}: remove "
            f"{given[0] if given else 'it'}; its settings are {', '.join(map(str, known))}")


def interrupted(cfg: object) -> NoReturn:
    """Ctrl-C or SIGTERM outside the training loop (which turns a first one into a
    checkpoint and a stop, see seg.engine.signals): one line and the shell's 128 + the
    signal (130, 143), no traceback, ending a sweep too. A run folder that holds nothing
    but Hydra's files goes, as after an error."""
    signum = StartUpSignals.received
    if HydraConfig.initialized() and run_folder_unused():
        report(f"{stopped_by(signum)} before training started; nothing was written")
    else:
        shown = " (Ctrl-C)" if signum == signal.SIGINT else ""
        report(f"{stopped_by(signum)}{shown}: what was written so far is kept")
    if not in_sweep():
        remove_unused_run_folder(cfg if isinstance(cfg, DictConfig) else None)
    sys.exit(128 + signum)


def stopped_by(signum: int) -> str:
    """How the one line names what stopped the command."""
    return "interrupted" if signum == signal.SIGINT else \
        f"stopped by {signal.Signals(signum).name}"


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


def run_folder_unused() -> bool:
    """Whether this run's folder (not the working folder) holds only Hydra's files."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if not run_dir.is_dir() or Path.cwd().resolve().is_relative_to(run_dir.resolve()):
        return False
    return holds_only_hydra_files(run_dir, hydra_cfg.job.name)


def interrupts_reported(config_name: str) -> Callable[[Callable], Callable]:
    """Decorates a command: a Ctrl-C while it starts, before Hydra runs the task (which
    reports its own, :func:`interrupted`), is one line and exit status 130. Nothing has
    been written then, but where Hydra made a run folder, it goes."""
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


def config_error_line(error: Exception) -> str:
    """Hydra's words for a composition error (a misspelt key, an unknown option), in one
    line that says the fix."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = error.__cause__
    unknown_key = isinstance(cause, ConfigKeyError | ConfigAttributeError)
    if lines[0].startswith("Could not override") and unknown_key:
        key = lines[0].split("'")[1]
        return (f"{key} is not a key of this config: check its spelling (--cfg job prints "
                f"every key), or add a new one with +{key}=VALUE")
    if isinstance(error, MissingConfigException) and "Available options" in str(error):
        listed = lines[2:lines.index("Config search path:")] if "Config search path:" in lines \
            else lines[2:]
        options = [line for line in listed if not line.startswith("_")]
        missing = lines[0].split(": ", 1)[-1]
        return f"{missing}: choose one of {', '.join(options)}"
    if isinstance(error, OverrideParseException):
        return f"cannot read the override {error.override!r} ({lines[0]}): check its quotes " \
               "and brackets"
    return lines[0] + (f" ({str(cause).splitlines()[0]})" if cause else "")


def refuse(line: str) -> NoReturn:
    """An error found before Hydra starts the run: one line, exit 1, nothing written."""
    print(f"error: {printable(line)}", file=sys.stderr)
    sys.exit(1)


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


def hydra_command(config_name: str) -> Callable[[Callable], Callable]:
    """Decorates a ``@hydra.main`` entry point: an error of the command line (a misspelt
    key, an unknown option, a malformed override), a Ctrl-C while it starts and a sweep's
    failed run are each one line and exit status 1 (130 for Ctrl-C), no traceback."""

    def decorate(hydra_main: Callable[[], object]) -> Callable[[], object]:
        @functools.wraps(hydra_main)
        @interrupts_reported(config_name)
        def command() -> object:
            # a log line that a full disk refuses is lost, not a traceback on stderr
            # that buries the one line saying so
            logging.raiseExceptions = False
            with hydra_files_kept_unless_trained():  # a run that fails at once
                return without_tracebacks(hydra_main)

        return command

    return decorate


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
