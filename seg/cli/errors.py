"""What the user can fix, in one line: Hydra's, OmegaConf's and seg's exceptions (and a
stop signal) turned into one line on stderr, in the run's log too, and an exit status,
no traceback. Anything else is a bug in seg and keeps its traceback.

The command plumbing (seg.cli.command) hands its errors here; nothing here runs a
command."""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    CompactHydraException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    InterpolationToMissingValueError,
    MissingMandatoryValue,
)

from seg.cli.run_folder import (
    holds_only_hydra_files,
    remove_unused_run_folder,
    starting_run_folder,
)
from seg.errors import UserError
from seg.text import printable

# What the user can fix: one line, no traceback. Besides seg's own UserError, the
# operating system's word on a path (a missing file, no permission). Anything else is a
# bug in seg and keeps its traceback.
USER_ERRORS = (UserError, FileNotFoundError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError)


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


def stop_or_fail(error: Exception, cfg: object) -> None:
    """Exit as seg.cli.command.exit_on_user_error says when ``error`` is a stop signal's
    or the user's; return when it is neither (a bug)."""
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
    unresolved (``seed=${nosuch}`` is one), for a line to name the one at fault."""
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


def interrupted(cfg: object, signum: int) -> NoReturn:
    """Ctrl-C or SIGTERM (``signum``) outside the training loop (which turns a first one
    into a checkpoint and a stop, see seg.engine.signals): one line and the shell's 128 +
    the signal (130, 143), no traceback, ending a sweep too. A run folder that holds
    nothing but Hydra's files goes, as after an error."""
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


def run_folder_unused() -> bool:
    """Whether this run's folder (not the working folder) holds only Hydra's files."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if not run_dir.is_dir() or Path.cwd().resolve().is_relative_to(run_dir.resolve()):
        return False
    return holds_only_hydra_files(run_dir, hydra_cfg.job.name)


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
