"""Text from data on its way to a terminal or a log is escaped (seg.text)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from seg.text import EscapedArguments, Lines, escape_logged_text, printable

HOSTILE = ["\x1b[2J", "\x1b]0;title\x07", "a\nINFO fake", "evil\u202etxt.png", "\r\x7f"]


def logged(message: str, *args: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(EscapedArguments())
    logger = logging.getLogger("seg.test_text")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(message, *args)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def only_printable(text: str) -> bool:
    return all(line.isprintable() for line in text.split("\n"))


def test_printable_escapes_every_control_and_format_character():
    for text in HOSTILE:
        assert printable(text).isprintable()
        assert "\x1b" not in printable(text)


def test_log_arguments_are_escaped_and_add_no_line():
    for text in HOSTILE:
        output = logged("skipped %s (%s)", text, Path(f"/data/{text}"))
        assert output.count("\n") == 1 and only_printable(output), output


def test_an_fstring_message_is_escaped_too():
    output = logged(f"read {HOSTILE[2]}{HOSTILE[0]}")
    assert output.count("\n") == 1 and "\x1b" not in output


def test_seg_tables_keep_their_lines_but_not_controls():
    table = Lines("class  IoU\nbg\x1b[2J  0.5\ncat  0.7")
    output = logged("final:\n%s", table)
    assert output.count("\n") == 4 and only_printable(output)


def test_a_record_filtered_by_two_handlers_keeps_its_lines():
    """Hydra's console and file handlers each filter the same record."""
    record = logging.makeLogRecord({"msg": "final:\n%s", "args": (Lines("a\nb\x1b"),)})
    for _ in range(2):
        EscapedArguments().filter(record)
    assert record.getMessage() == "final:\na\nb\\x1b"


def test_numbers_are_formatted_as_numbers():
    assert logged("iteration %d: %.2f", 3, 0.5) == "iteration 3: 0.50\n"


def test_every_root_handler_gets_the_filter_once():
    handler = logging.StreamHandler(io.StringIO())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        escape_logged_text()
        escape_logged_text()
        assert sum(isinstance(f, EscapedArguments) for f in handler.filters) == 1
    finally:
        root.removeHandler(handler)
