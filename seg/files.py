"""Writing files so that nothing is lost: never through a link, never half-written, never
over an input; reading the files a run left behind as data that may be hostile.

Every output of seg (checkpoints, masks, overlays, eval.json, metrics.json, an ONNX
graph) goes through :func:`write_file`: the bytes land in a temporary file of a unique
name in the target's folder (created exclusively, so a link planted there is never
followed), reach the disk, and are renamed over the target. A rename replaces the name
itself, never what a link there points to. A failed write (a full disk, a quota, no
permission) removes the temporary file and raises :class:`WriteFailed`, one line naming
the path and the free space; the previous file stays as it was.

Everything seg reads back from a folder someone may have handed over (metrics.json,
``.hydra/config.yaml``, eval.json, classes.yaml, split lists, weights) goes through
:func:`read_run_file` and the readers built on it: a regular file only (a FIFO would hang,
a link to /dev/zero would never end), at most a size cap, JSON and YAML parsed without
YAML's aliases (a "billion laughs"); a malformed one is one line naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import yaml

from seg.errors import BadValue, IsAFolder, MissingPath, PathExists
from seg.text import printable

# The longest file name most file systems take (ext4, xfs, btrfs, tmpfs: 255 bytes).
NAME_MAX = 255
# The temporary file's name: "." + the target's name (cut) + "." + mkstemp's 8 random
# characters + ".tmp"; one left behind was a write cut off by SIGKILL.
TEMPORARY_NAME_ROOM = NAME_MAX - 1 - 1 - 8 - 4
TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = current_umask()  # read once: setting it to read it is not thread-safe


class WriteFailed(BadValue):
    """An output could not be written (disk full, no permission, ...); nothing was changed.
    ``reason`` is the operating system's word for it ("No space left on device")."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


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
                       "some space or choose another folder; nothing was replaced", reason)


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
               replace: bool = True, sync: bool = True) -> Path:
    """Write ``content`` (bytes, or a function that writes into a binary file) to ``path``
    atomically (see the module docstring). ``replace=False`` keeps an existing ``path``
    (:class:`PathExists`); with ``replace`` only a plain file is replaced. ``sync=False``
    skips waiting for the disk, for files made by the thousand that a crash would only
    ask to make again (a generated dataset): still never through a link, never half-seen."""
    path = Path(path)
    check_name_fits(path)
    refuse_unless_replaceable(path, replace)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{temporary_stem(path.name)}.",
                                             suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise write_failed(path, error) from None
    try:
        with os.fdopen(handle, "wb") as file:
            if isinstance(content, bytes):
                file.write(content)
            else:
                content(file)
            file.flush()
            if sync:
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
    if sync:
        sync_folder(path.parent)
    return path


def first_existing(folder: str | Path) -> Path:
    """``folder``, or the nearest folder above it that exists: where a mkdir would begin."""
    folder = Path(folder)
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def cannot_write_in(folder: Path) -> str | None:
    """Why nothing can be made in the existing ``folder`` (the operating system's words:
    "Read-only file system"), found by making and removing a folder there; None when it
    can."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".seg-write-test-", dir=folder))
    except OSError as error:
        return error.strerror or str(error)
    return None


def check_name_fits(path: Path) -> None:
    """One line when ``path``'s own name is longer than a file system takes."""
    if len(os.fsencode(path.name)) > NAME_MAX:
        raise BadValue(f"cannot write {printable(path)}: its name is longer than "
                       f"{NAME_MAX} bytes, more than a file system takes; choose a shorter "
                       "name")


def temporary_stem(name: str) -> str:
    """``name``, cut so that the temporary file's name beside it fits in NAME_MAX bytes
    (a valid 249-byte name would otherwise fail as "File name too long")."""
    return os.fsencode(name)[:TEMPORARY_NAME_ROOM].decode("utf-8", "ignore")


def write_text(path: str | Path, text: str, replace: bool = True, sync: bool = True) -> Path:
    return write_file(path, text.encode(), replace, sync)


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




# -- reading what a run left behind -----------------------------------------------------------

SMALL_FILE_BYTES = 16 << 20  # metrics.json, a config, a split list: kilobytes, rarely more


def read_run_file(path: str | Path, what: str, limit: int = SMALL_FILE_BYTES) -> bytes:
    """The bytes of ``path`` (``what`` it is, for the messages), when it is a regular file
    (a link to one is followed) of at most ``limit`` bytes. Anything else is one line
    naming it: missing, a folder, a FIFO or a device (opened without waiting, so a FIFO
    never hangs), too large, unreadable."""
    path = Path(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise MissingPath(f"{printable(what)} not found: {printable(path)}") from None
    except IsADirectoryError:
        raise IsAFolder(f"{printable(what)} {printable(path)} is a folder, not a file") from None
    except OSError as error:
        raise BadValue(f"cannot read {printable(what)} {printable(path)} "
                       f"({error.strerror})") from None
    found = os.fstat(descriptor)
    if not stat.S_ISREG(found.st_mode):
        os.close(descriptor)
        if stat.S_ISDIR(found.st_mode):
            raise IsAFolder(f"{printable(what)} {printable(path)} is a folder, not a file")
        raise BadValue(f"{printable(what)} {printable(path)} is not a regular file (a "
                       "FIFO, a device or a socket): replace it with the file itself")
    with os.fdopen(descriptor, "rb") as file:
        if found.st_size > limit:
            raise BadValue(f"{printable(what)} {printable(path)} holds {found.st_size} bytes, "
                           f"more than such a file takes (at most {limit}); check the file")
        try:
            os.set_blocking(file.fileno(), True)
            content = file.read(limit + 1)
        except OSError as error:
            raise BadValue(f"cannot read {printable(what)} {printable(path)} "
                           f"({error.strerror})") from None
    if len(content) > limit:  # grew while it was read
        raise BadValue(f"{printable(what)} {printable(path)} holds more than {limit} bytes, "
                       "more than such a file takes; check the file")
    return content


def read_run_text(path: str | Path, what: str, limit: int = SMALL_FILE_BYTES) -> str:
    """:func:`read_run_file` as UTF-8 text (a leading byte-order mark dropped)."""
    try:
        return read_run_file(path, what, limit).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadValue(f"{printable(what)} {printable(path)} is not UTF-8 text; save it as "
                       "plain UTF-8") from None


REWRITE = "rewrite it, or delete it to start that step again"


def read_json(path: str | Path, what: str, limit: int = SMALL_FILE_BYTES,
              kind: type = dict, fix: str = REWRITE) -> object:
    """The JSON value of ``path``, which must be a ``kind`` (a JSON object by default);
    ``fix`` ends the message of a malformed one."""
    text = read_run_text(path, what, limit)
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise BadValue(f"{printable(path)}: not valid JSON "
                       f"({printable(str(error).splitlines()[0])}), not the {printable(what)} "
                       f"seg writes: {fix}") from None
    return expect_kind(value, kind, what, path, fix)


class NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases (``*name``): a few hundred bytes of nested
    aliases expand to gigabytes once read (a "billion laughs"), and no file seg reads has
    any use for them."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted: write the value out", mark)
        return super().compose_node(parent, index)


def read_yaml(path: str | Path, what: str, limit: int = SMALL_FILE_BYTES,
              kind: type = dict, fix: str = REWRITE) -> object:
    """The YAML value of ``path`` (no aliases), which must be a ``kind`` (a mapping by
    default); one line naming the file, the line and the problem otherwise."""
    text = read_run_text(path, what, limit)
    try:
        value = yaml.load(text, Loader=NoAliasLoader)
    except RecursionError:  # PyYAML composes nested lists recursively
        raise BadValue(f"{printable(path)}: nested too deeply to be a {printable(what)}; "
                       "check the file") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise BadValue(f"{printable(path)}: not valid YAML ({where}{printable(problem)}), "
                       f"not the {printable(what)} seg reads: {fix}") from None
    return expect_kind(value, kind, what, path, fix)


def expect_kind(value: object, kind: type, what: str, path: str | Path,
                fix: str = REWRITE) -> object:
    """``value`` when it is a ``kind``; else one line naming the file and what it holds."""
    if not isinstance(value, kind):
        expected = {dict: "a mapping", list: "a list"}.get(kind, kind.__name__)
        raise BadValue(f"{printable(what)} {printable(path)} holds "
                       f"{type(value).__name__ if value is not None else 'nothing'}, not "
                       f"{expected}: {fix}")
    return value
