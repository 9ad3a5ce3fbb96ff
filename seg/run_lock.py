"""One writer per run folder: a lock on ``<run folder>/.lock`` for as long as a run trains.

The lock is the operating system's (``flock``), held through an open file: it goes with
the process however the process ends (an exception, a signal, SIGKILL, a node that goes
down with it), so a lock left by a killed run is never mistaken for a live one. The file
itself stays, holding the last holder's pid and host for the message another process
gets. Where ``fcntl`` is missing (Windows), runs are not locked.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

from seg.errors import PathExists, UserError
from seg.files import read_run_text
from seg.text import printable

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".lock"


def in_use_message(run_dir: Path, holder: str) -> str:
    return (f"run folder {run_dir} is in use by {holder}: wait for that run to end, or "
            "train into another folder (another hydra.run.dir, or none for a dated one)")


def try_lock(descriptor: int) -> bool:
    """Take the lock; False when another process holds it. A file system without locks
    (some network mounts answer ENOLCK) leaves the run unlocked, as on Windows."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def holder_of(path: Path) -> str:
    """Who holds the lock file at ``path``, as its holder wrote it."""
    with contextlib.suppress(UserError):  # a FIFO or a huge file there is no holder's
        written = read_run_text(path, "lock file", limit=4096).split()
        if len(written) == 2 and written[0].isdigit():
            return f"process {written[0]} on {printable(written[1][:64])}"
    return "another process"


@contextlib.contextmanager
def run_folder_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock while the block runs; :class:`PathExists` naming the
    holder when another process has it. The folder is made if it is missing."""
    if fcntl is None:
        yield
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    try:
        # O_NOFOLLOW: a link planted as .lock must not make the pid land elsewhere
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                             0o644)
    except OSError as error:  # a link, a folder
        raise PathExists(f"{path} cannot be the run folder's lock file ({error.strerror}): "
                         "remove it, then run again") from None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise PathExists(f"{path} is not a plain file (a FIFO or a device) and cannot "
                             "be the run folder's lock file: remove it, then run again")
        if not try_lock(descriptor):
            raise PathExists(in_use_message(run_dir, holder_of(path)))
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield
    finally:
        os.close(descriptor)  # releases the lock


def holder_if_locked(run_dir: str | Path) -> str | None:
    """Who holds ``run_dir``'s lock, when a live process does; None otherwise. Writes
    nothing: what a command asks before Hydra writes into the folder, and what keeps a
    failed command from removing a folder another run is starting in."""
    path = Path(run_dir) / LOCK_NAME
    if fcntl is None or path.is_symlink() or not path.is_file():
        return None
    try:
        # read-write: over NFS, flock is a write lock, refused on a read-only descriptor
        descriptor = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        return None if try_lock(descriptor) else holder_of(path)
    finally:
        os.close(descriptor)


def refuse_if_locked(run_dir: str | Path) -> None:
    """Fail, as :func:`run_folder_lock` would, when a live process holds ``run_dir``'s lock."""
    holder = holder_if_locked(run_dir)
    if holder is not None:
        raise PathExists(in_use_message(Path(run_dir), holder))
