"""Text from data (class names from a classes.yaml or from a checkpoint someone handed
over) on its way to a terminal or a log: escaped, so that it can never clear the screen,
set the window title, reorder a line (bidi overrides) or fake a log line (a newline)."""

from __future__ import annotations

import logging
import os


def printable(text: object) -> str:
    """``text`` with each character Python deems non-printable (C0 and C1 controls, ESC,
    newlines, tabs, DEL, format characters such as U+202E, separators other than the
    space) written as its escape, as ``repr`` writes it: ``\\x1b``, ``\\n``, ``\\u202e``."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def shown(value: object, limit: int = 60) -> str:
    """``value`` as ``repr`` writes it, escaped and cut to ``limit`` characters: a bad
    value quoted in a one-line error, whatever it holds or however long it is."""
    text = printable(repr(value))
    return text if len(text) <= limit else text[:limit - 1] + "…"


class EscapedArguments(logging.Filter):
    """A log handler's filter: every text argument of a record (``log.info("... %s",
    name)``) is escaped with :func:`printable` before it is formatted. The format string
    is seg's own; what fills it (file names, class names, config strings) may come from
    data, and must not add a line or move the cursor. A record's multi-line text that
    seg builds itself (a table) is passed as :class:`Lines`: each of its lines is escaped,
    its line breaks kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(escaped(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: escaped(arg) for key, arg in record.args.items()}
        if not record.args:  # the message itself may be an f-string holding data
            record.msg = escaped(record.msg)
        return True


class Lines(str):
    """Text of several lines that seg composed (a table): its line breaks are its own."""


def escaped(value: object) -> object:
    """``value`` escaped for a log line when it is text or a path; numbers pass as they are."""
    if isinstance(value, Lines):  # still Lines: the next handler's filter keeps its lines
        return Lines("\n".join(printable(line) for line in value.split("\n")))
    if isinstance(value, (str, os.PathLike)):
        return printable(os.fspath(value))
    return value


def escape_logged_text() -> None:
    """Put :class:`EscapedArguments` on every handler of the root logger (Hydra's console
    and file handlers, set up by the time a command runs); idempotent."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, EscapedArguments) for f in handler.filters):
            handler.addFilter(EscapedArguments())
