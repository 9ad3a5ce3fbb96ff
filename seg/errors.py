"""Errors the user can fix: a path, a setting, a file's contents. The entry points print
their message as one line and exit 1; any other exception is a bug in seg and keeps its
traceback. Each also is the built-in error it refines, so ``except ValueError`` and the
like still catch it."""

from __future__ import annotations


class UserError(Exception):
    """Bad input; the message names the file or the setting, and the fix."""


class BadValue(UserError, ValueError):
    """A setting, an argument or a file's contents that cannot be used."""


class MissingSetting(UserError, KeyError):
    """A setting the command needs is absent from the config."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingPath(UserError, FileNotFoundError):
    """A file or folder that should be there is not."""


class PathExists(UserError, FileExistsError):
    """An output would replace an input or an earlier run."""


class NotAFolder(UserError, NotADirectoryError):
    """A path that should be a folder is a file."""


class IsAFolder(UserError, IsADirectoryError):
    """A path that should be a file is a folder."""


class NonFiniteLoss(UserError, FloatingPointError):
    """Training diverged (a NaN or Inf loss); the message says what to change."""
