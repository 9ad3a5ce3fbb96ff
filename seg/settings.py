"""Checks of user-given settings: each failure is one line that names the key, what it got
and what it takes, raised as ``ValueError`` (or, for a path, ``FileNotFoundError`` and
the like: seg.errors' types), which the entry points print before exiting 1."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from pathlib import Path

from seg.errors import BadValue, MissingPath, NotAFolder


def is_int(value: object) -> bool:
    """An integer, and not a bool (``True`` is an int to Python, never to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A real number, and not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool)


def positive_int(value: object, key: str, allow_none: bool = False) -> int | None:
    """``value`` if it is an integer >= 1 (or None where ``allow_none``)."""
    if value is None and allow_none:
        return None
    if not is_int(value) or value < 1:
        also = " or null" if allow_none else ""
        raise BadValue(f"{key} must be a positive integer{also}, got {value!r}")
    return value


def positive_ints(value: object, key: str) -> int | tuple[int, int]:
    """A positive integer, or a ``[height, width]`` pair of them (a size)."""
    if is_int(value) and value >= 1:
        return value
    if (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
            and all(is_int(v) and v >= 1 for v in value)):
        return int(value[0]), int(value[1])
    raise BadValue(f"{key} must be a positive integer or [height, width], got {value!r}")


def number_in(value: object, key: str, low: float, high: float) -> float:
    """``value`` if it is a number within ``[low, high]``."""
    if not is_number(value) or not low <= value <= high:
        raise BadValue(f"{key} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def positive_number(value: object, key: str, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if not is_number(value) or not value > 0:
        also = " or null" if allow_none else ""
        raise BadValue(f"{key} must be a positive number{also}, got {value!r}")
    return float(value)


def integer(value: object, key: str) -> int:
    if not is_int(value):
        raise BadValue(f"{key} must be an integer, got {value!r}")
    return value


def integer_in(value: object, key: str, low: int, high: int) -> int:
    """``value`` if it is an integer within ``[low, high]``."""
    if not low <= integer(value, key) <= high:
        raise BadValue(f"{key} must be an integer from {low} to {high}, got {value!r}")
    return value


def per_channel(value: object, key: str, channels: int = 3, positive: bool = False
                ) -> list[float]:
    """``value`` if it is a list of ``channels`` finite numbers, one per colour channel
    (each above 0 where ``positive``: a divisor)."""
    numbers = list(value) if isinstance(value, Sequence) and not isinstance(value, str) \
        else None
    if numbers is None or len(numbers) != channels or not all(
            is_number(v) and math.isfinite(v)
            and (v > 0 or not positive) for v in numbers):
        kind = "positive numbers" if positive else "numbers"
        raise BadValue(f"{key} must be {channels} {kind}, one per colour channel (R, G, B), "
                       f"got {value!r}")
    return [float(v) for v in numbers]


def one_of(value: object, key: str, choices: Sequence[object]) -> object:
    if value not in choices:
        raise BadValue(f"{key}={value!r}: use one of {', '.join(map(str, choices))}")
    return value


def check_dataset_root(root: str | Path, setup_command: str | None = None,
                       key: str = "dataset.root") -> None:
    """``root`` is a folder; else one line naming it and the fix (``setup_command`` makes
    it, or the ``key`` to set)."""
    if Path(root).is_file():
        raise NotAFolder(f"dataset root {root} is a file, not a folder: set {key} "
                         "to the dataset's folder")
    if not Path(root).is_dir():
        hint = f"create it with `{setup_command}`" if setup_command else f"set {key}=PATH"
        raise MissingPath(f"dataset root {root} does not exist: {hint}")


def optional_package(name: str, needed_by: str, extra: str):
    """The optional package ``name``, imported, or one line: ``needed_by`` (the setting
    that asks for it) needs it, and the extra of seg that installs it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise MissingPath(f"{needed_by} needs the {name} package: pip install 'seg[{extra}]' "
                          "(make install installs it)") from None
