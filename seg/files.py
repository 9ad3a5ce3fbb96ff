"""Writing files so that nothing is lost: never through a link, never half-written, never
over an input.

Every output of seg (checkpoints, masks, overlays, eval.json, metrics.json, an ONNX
graph) goes through :func:`write_file`: the bytes land in a temporary file of a unique
name in the target's folder (created exclusively, so a link planted there is never
followed), reach the disk, and are renamed over the target. A rename replaces the name
itself, never what a link there points to. A failed write (a full disk, a quota, no
permission) removes the temporary file and raises :class:`WriteFailed`, one line naming
the path and the free space; the previous file stays as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from seg.errors import BadValue, PathExists


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = current_umask()  # read once: setting it to read it is not thread-safe


class WriteFailed(BadValue):
    """An output could not be written (disk full, no permission, ...); nothing was changed."""


def free_space(folder: Path) -> str:
    """The free space of ``folder``'s file system, e.g. ``"1.2 GB free"``."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if free < 1000 or unit == "TB":
            return f"{free:.0f} {unit} free" if unit == "bytes" else f"{free:.1f} {unit} free"
        free /= 1000
    raise AssertionError("unreachable")


def behind(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The ``kind`` of error behind ``error``: itself, or what a library was handling when
    it failed (torch's writer raises RuntimeError over a failed write, or over a Ctrl-C
    that stopped it half-way)."""
    while error is not None and not isinstance(error, kind):
        error = error.__cause__ or error.__context__
    return error


def os_error_of(error: BaseException) -> OSError | None:
    return behind(error, OSError)


def write_failed(path: Path, error: BaseException) -> WriteFailed:
    reason = getattr(os_error_of(error), "strerror", None) or str(error).splitlines()[0]
    return WriteFailed(f"cannot write {path} ({reason}; {free_space(path.parent)}): free "
                       "some space or choose another folder; nothing was replaced")


def refuse_unless_replaceable(path: Path, replace: bool) -> None:
    """An existing ``path`` is kept unless ``replace``; even then a link, a folder or a
    file with other names (a hard link, which may be an input) is never replaced."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    if not replace:
        raise PathExists(f"{path} exists: choose a new name, or overwrite=true to replace it")
    if stat.S_ISLNK(found.st_mode):
        raise PathExists(f"{path} is a symbolic link: seg never writes through links; "
                         "remove it or choose another folder")
    if not stat.S_ISREG(found.st_mode) or found.st_nlink > 1:
        raise PathExists(f"{path} is not a plain file that seg wrote (a folder, a device or a "
                         "hard link): remove it or choose another folder")


def write_file(path: str | Path, content: bytes | Callable[[BinaryIO], object],
               replace: bool = True) -> Path:
    """Write ``content`` (bytes, or a function that writes into a binary file) to ``path``
    atomically (see the module docstring). ``replace=False`` keeps an existing ``path``
    (:class:`PathExists`); with ``replace`` only a plain file is replaced."""
    path = Path(path)
    refuse_unless_replaceable(path, replace)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=path.parent)
    except OSError as error:
        raise write_failed(path, error) from None
    try:
        with os.fdopen(handle, "wb") as file:
            if isinstance(content, bytes):
                file.write(content)
            else:
                content(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~UMASK)  # mkstemp's 0600 is too private
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, (OSError, RuntimeError)) and os_error_of(error) is not None:
            raise write_failed(path, error) from None
        if behind(error, KeyboardInterrupt) is not None:
            raise KeyboardInterrupt from None  # a second Ctrl-C: the previous file stays
        raise
    sync_folder(path.parent)
    return path


def write_text(path: str | Path, text: str, replace: bool = True) -> Path:
    return write_file(path, text.encode(), replace)


def sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` reach the disk (a no-op where folders cannot be synced)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


