"""Text from data (class names from a classes.yaml or from a checkpoint someone handed
over) on its way to a terminal or a log: escaped, so that it can never clear the screen,
set the window title, reorder a line (bidi overrides) or fake a log line (a newline)."""

from __future__ import annotations


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
