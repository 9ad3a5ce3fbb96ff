"""What the entry points share: turning config nodes into objects, one-line errors."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    CompactHydraException,
    HydraException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationToMissingValueError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from seg.cli.run_folder import (
    hydra_files_kept_unless_trained,
    register_run_dir_resolver,
    remove_unused_run_folder,
    resumed_run_folder,
)
from seg.cli.sweeps import register_run_name_resolver
from seg.data.resolvers import register_resolvers
from seg.errors import UserError

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


def one_line(message: str) -> str:
    """A DataLoader worker's error comes back as "Caught X in DataLoader worker ...
    Original Traceback ...": the user needs only its last line, the original message."""
    if "Original Traceback" not in message:
        return message
    last = message.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


def root_cause(error: BaseException) -> BaseException:
    """Hydra wraps errors raised in constructors; the user needs the original one."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def report(line: str) -> None:
    """``line`` on stderr, and in the run's log file (Hydra's file handler), so that the
    log of a run that failed or stopped says why."""
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
    128 + the signal's number, ending a sweep too.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        from seg.engine import TrainingInterrupted

        try:
            return main(*args, **kwargs)
        except TrainingInterrupted as stop:
            report(f"stopped: {stop}")
            # the shell's convention for "ended by signal N"; in a sweep too, which a
            # signal stops as a whole (SystemExit passes Hydra's per-run error handling)
            sys.exit(128 + stop.signum)
        except (MissingMandatoryValue, InterpolationToMissingValueError) as error:
            fail(missing_value_line(error), args[0] if args else None)
        except (*USER_ERRORS, InstantiationException) as error:
            cause = root_cause(error)
            if not isinstance(cause, USER_ERRORS):
                raise
            message = one_line(str(cause.args[0]) if len(cause.args) == 1 else str(cause))
            fail(f"error: {message}", args[0] if args else None)

    return wrapper


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


def check_overrides(config_name: str, argv: list[str]) -> DictConfig | None:
    """Compose ``config_name`` with the command line's overrides before Hydra does, so that
    a misspelt key or an unknown option is one line of error and exit status 1 (Hydra's own
    report takes eight lines); return the composed config. Only single runs: a sweep's
    values are Hydra's to expand."""
    if any(arg.startswith("-") for arg in argv):
        return None  # --help, --cfg, -m ...: Hydra's own business
    from hydra import compose, initialize_config_module

    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(config_name=config_name, overrides=argv)
    except (HydraException, OmegaConfBaseException) as error:
        if isinstance(error, InstantiationException):
            return None
        print(f"error: {config_error_line(error)}", file=sys.stderr)
        sys.exit(1)


def overrides_checked(config_name: str) -> Callable[[Callable], Callable]:
    """Decorates a ``@hydra.main`` entry point: the command line's overrides are checked
    first (:func:`check_overrides`)."""

    def decorate(hydra_main: Callable[[], object]) -> Callable[[], object]:
        @functools.wraps(hydra_main)
        def command() -> object:
            cfg = check_overrides(config_name, sys.argv[1:])
            if any(arg in ("-m", "--multirun") for arg in sys.argv[1:]):
                return sweep_without_tracebacks(hydra_main)
            resumed = None if cfg is None else resumed_run_folder(
                OmegaConf.select(cfg, "trainer.resume"))
            with hydra_files_kept_unless_trained(resumed):  # a resume that fails at once
                return hydra_main()

        return command

    return decorate


def sweep_without_tracebacks(hydra_main: Callable[[], object]) -> object:
    """Run a sweep whose failed runs end it with their one-line error and exit status 1,
    as a single run does. Hydra would print a run's error as a traceback (or, for a
    :class:`RunFailed`, add a line about HYDRA_FULL_ERROR): HYDRA_FULL_ERROR=1 makes it
    raise the error instead, to be reported here. Errors of seg itself (bugs) keep their
    traceback. Where the user set HYDRA_FULL_ERROR, Hydra's reporting stays as it is."""
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
    except CompactHydraException as error:  # a sweep's bad override or option
        print(f"error: {config_error_line(error)}", file=sys.stderr)
        sys.exit(1)
    finally:
        del os.environ["HYDRA_FULL_ERROR"]
