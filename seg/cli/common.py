"""What the entry points share: turning config nodes into objects, one-line errors."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    HydraException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from seg.data.resolvers import register_resolvers
from seg.engine import TrainingInterrupted
from seg.errors import UserError
from seg.models import SegmentationModel, build_model

# The repository's configs/, which pyproject ships inside the wheel as this package.
CONFIG_MODULE = "seg.configs"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"

# What the user can fix: one line, no traceback. Besides seg's own UserError, the
# operating system's word on a path (a missing file, no permission). Anything else is a
# bug in seg and keeps its traceback.
USER_ERRORS = (UserError, FileNotFoundError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError)
register_resolvers()  # ${seg.imagenet_mean:} and the like in configs/dataset/


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


def exit_on_user_error(main: Callable) -> Callable:
    """Print a user error as one line on stderr and exit 1 instead of a traceback.

    In a sweep the error is printed and raised again, so that Hydra records the run as
    failed and goes on with the others, then exits non-zero. A stop signal
    (``TrainingInterrupted``: the checkpoint is saved) exits with 128 + the signal's
    number, ending a sweep too.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except TrainingInterrupted as stop:
            report(f"stopped: {stop}")
            # the shell's convention for "ended by signal N"; in a sweep too, which a
            # signal stops as a whole (SystemExit passes Hydra's per-run error handling)
            sys.exit(128 + stop.signum)
        except MissingMandatoryValue as error:
            report(f"error: {error.full_key} has no value: set {error.full_key}=VALUE")
            if in_sweep():
                raise
            sys.exit(1)
        except (*USER_ERRORS, InstantiationException) as error:
            cause = root_cause(error)
            if not isinstance(cause, USER_ERRORS):
                raise
            message = one_line(str(cause.args[0]) if len(cause.args) == 1 else str(cause))
            report(f"error: {message}")
            if in_sweep():
                raise
            sys.exit(1)

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


def check_overrides(config_name: str, argv: list[str]) -> None:
    """Compose ``config_name`` with the command line's overrides before Hydra does, so that
    a misspelt key or an unknown option is one line of error and exit status 1 (Hydra's own
    report takes eight lines). Only single runs: a sweep's values are Hydra's to expand."""
    if any(arg.startswith("-") for arg in argv):
        return  # --help, --cfg, -m ...: Hydra's own business
    from hydra import compose, initialize_config_module

    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            compose(config_name=config_name, overrides=argv)
    except (HydraException, OmegaConfBaseException) as error:
        if isinstance(error, InstantiationException):
            return
        print(f"error: {config_error_line(error)}", file=sys.stderr)
        sys.exit(1)


def overrides_checked(config_name: str) -> Callable[[Callable], Callable]:
    """Decorates a ``@hydra.main`` entry point: the command line's overrides are checked
    first (:func:`check_overrides`)."""

    def decorate(hydra_main: Callable[[], object]) -> Callable[[], object]:
        @functools.wraps(hydra_main)
        def command() -> object:
            check_overrides(config_name, sys.argv[1:])
            return hydra_main()

        return command

    return decorate


def model_from_config(model_cfg: DictConfig, num_classes: int) -> SegmentationModel:
    """Build encoder, upsampler factory and decoder from the ``model`` node."""
    encoder = instantiate(model_cfg.encoder)
    return build_model(encoder, instantiate(model_cfg.decoder), num_classes,
                       instantiate(model_cfg.upsampler))
