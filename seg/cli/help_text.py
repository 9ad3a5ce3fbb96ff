"""What the commands' ``--help`` adds to Hydra's and argparse's own, read from configs/ so
that a new key, comment or preset shows without editing a help: seg-train's settings,
each with its value and the comment written beside or above it in its YAML file (Hydra's
``$CONFIG`` prints the composed config, which has lost them), and seg-compare's presets,
each with the first sentence of its file's header comment."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Iterator, Mapping
from importlib.resources import files
from itertools import groupby
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from seg.text import printable

COMMENT_WIDTH = 100  # a longer comment is cut: the whole of it is in its file
VALUE_WIDTH = 40  # a longer value (a list of class names) too: --cfg job prints it whole
KEY_COLUMN = 44  # at most this wide, the key=value column before the comments

# `key: value  # comment` (a mapping's `key:` alone, or with an anchor `key: &name`); a
# list item (`- option`) or a merge key (`<<: *name`) is not a key of its own
KEY_LINE = re.compile(r"(?P<indent> *)(?P<key>[A-Za-z_][\w-]*) *:(?: +(?P<rest>.*))?")
MAPPING_START = re.compile(r"(&\S+)?")


def config_folder(module: str) -> Path:
    """The folder of the configs package ``module`` (seg.configs: the repository's
    configs/, or its copy inside an installed wheel)."""
    return Path(str(files(module)))


def joined(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def value_and_comment(rest: str) -> tuple[str, str]:
    """A key line's value and the comment after it: from the first ``#`` that follows a
    space, outside a quoted value."""
    quote = None
    for index, char in enumerate(rest):
        if quote is not None:
            quote = None if char == quote else quote
        elif char in "'\"" and rest[:index].rstrip()[-1:] in ("", "[", "{", ","):
            quote = char
        elif char == "#" and (index == 0 or rest[index - 1].isspace()):
            return rest[:index].strip(), rest[index + 1:].strip()
    return rest.strip(), ""


def package_of(text: str) -> str | None:
    """What the file's ``# @package`` line says (``""`` for ``_global_``), else None."""
    match = re.search(r"^# @package (\S+)", text, re.MULTILINE)
    if match is None:
        return None
    return "" if match[1] == "_global_" else match[1]


def read_comments(text: str, prefix: str = "") -> tuple[str, dict[str, str]]:
    """A YAML file's header comment (its first comment block, above its first key: what
    the whole file is) and each key's comment, by its dotted path under ``prefix``: the
    comment lines just above the key and the one beside it, with the more indented
    comment lines under a value that go on with it (as ``trainer.precision``'s); ``""``
    for a key the file sets without a comment."""
    reader = CommentReader(prefix)
    for line in text.splitlines():
        reader.read(line)
    return reader.header or "", reader.comments


class CommentReader:
    """:func:`read_comments`, one line at a time."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.header: str | None = None  # None until the first key or blank line settles it
        self.comments: dict[str, str] = {}
        self.above: list[str] = []  # the comment lines since the last key or blank line
        self.parents: list[tuple[int, str]] = []  # the mappings the line is in: (indent, key)
        self.scalar: tuple[int, str] | None = None  # the last key with a value
        self.text_indent: int | None = None  # inside a `|` or `>` text: its lines are no keys

    def read(self, line: str) -> None:
        stripped, indent = line.strip(), len(line) - len(line.lstrip(" "))
        if self.text_indent is not None and (not stripped or indent > self.text_indent):
            return
        self.text_indent = None
        if stripped.startswith("# @package"):
            return
        if not stripped:
            if self.header is None and self.above:
                self.header = joined(*self.above)
            self.above, self.scalar = [], None
        elif stripped.startswith("#"):
            self.note(stripped[1:].strip(), indent)
        elif (match := KEY_LINE.fullmatch(line)) is not None:
            self.key(len(match["indent"]), match["key"], match["rest"] or "")
        else:  # a list item, a merge key: the notes above it belong to no key
            self.above, self.scalar = [], None

    def note(self, note: str, indent: int) -> None:
        if self.scalar is not None and indent > self.scalar[0]:  # goes on under its value
            self.comments[self.scalar[1]] = joined(self.comments.get(self.scalar[1], ""), note)
        else:
            self.above.append(note)
            self.scalar = None

    def key(self, indent: int, key: str, rest: str) -> None:
        if self.header is None:  # the first comment block is the file's, not its first key's
            self.header, self.above = joined(*self.above), []
        while self.parents and self.parents[-1][0] >= indent:
            self.parents.pop()
        path = ".".join([*filter(None, [self.prefix]), *(name for _, name in self.parents), key])
        value, beside = value_and_comment(rest)
        self.comments[path] = joined(*self.above, beside)  # "": it sets the key, says nothing
        self.above, self.scalar = [], None
        if MAPPING_START.fullmatch(value):
            self.parents.append((indent, key))
        else:
            self.scalar = (indent, path)
            self.text_indent = indent if value[:1] in ("|", ">") else None


def first_sentence(text: str) -> str:
    """``text``'s first sentence, without its asides in parentheses or backticks: a
    file's header comment, said in one line."""
    while (shorter := re.sub(r"\s*\([^()]*\)", "", text)) != text:
        text = shorter
    text = text.replace("`", "")
    return re.split(r"(?<=[^.])[.:](?:\s|$)", text, maxsplit=1)[0].strip()


# -- seg-train --help: the settings with their comments ------------------------------------


def merged_files(folder: Path, config_name: str, choices: Mapping[str, str | None]
                 ) -> list[tuple[Path, str]]:
    """The YAML files Hydra merged into the config, each with the package its keys go
    under, in the order they were merged: the primary config, then each group's chosen
    option (after the files it includes), the ``@package _global_`` ones (experiment,
    debug, ...) last, as the primary config's defaults list orders them."""
    merged = [(folder / f"{config_name}.yaml", "")]
    for choice, option in reversed(list(choices.items())):  # Hydra lists the last one first
        group, _, package = choice.partition("@")
        if option is not None and group != "hydra" and not group.startswith("hydra/"):
            merged += with_included(folder, folder / group / f"{option}.yaml",
                                    package or group.replace("/", "."))
    return [(path, package) for path, package in merged if path.is_file()]


def with_included(folder: Path, path: Path, package: str) -> list[tuple[Path, str]]:
    """``path`` after the configs its defaults list includes by name (``/dataset_base@_here_``,
    a preset's ``default``), each with its package (``@package`` line first)."""
    if not path.is_file():
        return []
    text = path.read_text()
    if (own := package_of(text)) is not None:
        package = own
    defaults = (yaml.safe_load(text) or {}).get("defaults") or []
    included = []
    for entry in defaults:
        if not isinstance(entry, str) or entry == "_self_":
            continue  # a group's option: Hydra lists it among the choices
        name, _, at = entry.partition("@")
        where = folder / name[1:] if name.startswith("/") else path.parent / name
        included += with_included(folder, where.with_suffix(".yaml"),
                                  package if at in ("", "_here_") else at)
    return [*included, (path, package)]


def settings_help(root: DictConfig, folder: Path, config_name: str) -> str:
    """Every setting of the composed config ``root`` (its hydra node aside) as
    ``key=value  # comment``, one line each, under a heading per config group that names
    the option chosen and what its file's header says."""
    choices = dict(root.hydra.runtime.choices)
    merged = merged_files(folder, config_name, choices)
    headers, comments = {}, {}
    for path, package in merged:
        header, notes = read_comments(path.read_text(), package)
        # the file that sets a key last says what its value is: without a comment of its
        # own, an earlier file's would speak of the value it replaced
        comments.update(notes)
        if package and header:
            headers[package] = header
    titles = group_titles(choices, headers)
    config = OmegaConf.to_container(root, resolve=False)
    config.pop("hydra", None)
    lines = [(owner_of(path, titles), line) for path, value in settings(config)
             if (line := setting_line(path, value, comments.get(path), titles))]
    return "\n".join(section_lines(titles.get(owner, ""), [line for _, line in section])
                     for owner, section in groupby(lines, key=lambda item: item[0]))


def owner_of(path: str, packages: Iterable[str]) -> str:
    """The package of the config group that holds the setting ``path`` (``""``: none)."""
    return max((package for package in packages if path.startswith(f"{package}.")),
               key=len, default="")


def setting_line(path: str, value: object, note: str | None, titles: Mapping[str, object]
                 ) -> tuple[str, str | None] | None:
    """A setting's ``key=value`` with its comment; a mapping's key alone, where it has a
    comment of its own (``dataset.train``); None for what is not shown."""
    if path.rsplit(".", 1)[-1] == "_partial_":
        return None  # how Hydra builds the part (a function of the model's parameters)
    if value is not MAPPING:
        return f"{path}={value_text(value)}", note
    return (path, note) if note and path not in titles else None


def group_titles(choices: Mapping[str, str | None], headers: Mapping[str, str]
                 ) -> dict[str, tuple[str, str | None]]:
    """Each group's package (``model.encoder``) with its heading: ``model/encoder=simple``
    and its file's header comment."""
    titles = {}
    for choice, option in choices.items():
        group, _, package = choice.partition("@")
        package = package or group.replace("/", ".")
        if option is None or group == "hydra" or group.startswith("hydra/"):
            continue
        titles[package] = (f"{choice}={option}", headers.get(package))
    return titles


MAPPING = object()  # settings() yields it for a mapping, before the mapping's own settings


def settings(node: object, path: str = "") -> Iterator[tuple[str, object]]:
    """Each key of ``node`` by its dotted path, with its value, a mapping's keys after it."""
    for key, value in node.items():
        here = f"{path}.{key}" if path else str(key)
        if isinstance(value, dict) and value:
            yield here, MAPPING
            yield from settings(value, here)
        else:
            yield here, value


def section_lines(title: tuple[str, str | None] | str, lines: list[tuple[str, str | None]]
                  ) -> str:
    """A group's heading (none for the top-level keys), then its settings, indented, their
    comments in one column."""
    width = min(KEY_COLUMN, max((len(left) for left, note in lines if note), default=0))
    body = [commented(f"  {left}", note, width + 2) for left, note in lines]
    heading = [commented(*title, 0)] if title else []
    return "\n".join([*heading, *body, ""])


def commented(left: str, note: str | None, width: int) -> str:
    return f"{left.ljust(width)}  # {cut(note)}" if note else left


def cut(text: str, width: int = COMMENT_WIDTH) -> str:
    """``text`` on one line, escaped, cut at a word to ``width`` characters."""
    return textwrap.shorten(printable(" ".join(text.split())), width, placeholder=" ...")


def value_text(value: object) -> str:
    """A setting's value as YAML writes it in flow style (``[0.5, 2.0]``, ``null``), cut
    to :data:`VALUE_WIDTH` characters."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, list):
        text = "[" + ", ".join(map(value_text, value)) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{key}: {value_text(item)}" for key, item in value.items()) + "}"
    else:
        text = printable(value)
    return text if len(text) <= VALUE_WIDTH else text[:VALUE_WIDTH - 3] + "..."


def register_settings_resolver(config_module: str) -> None:
    """Make ``${seg.settings_help:CONFIG_NAME}`` known to OmegaConf (once per process): a
    command's help template (configs/hydra/help/) puts it where Hydra's ``$CONFIG`` was,
    for the config composed from ``config_module``'s ``CONFIG_NAME.yaml``."""

    def settings_of(config_name: str, _root_: DictConfig) -> str:
        text = settings_help(_root_, config_folder(config_module), config_name)
        return text.replace("$", "$$")  # Hydra reads the template as a string.Template

    if not OmegaConf.has_resolver("seg.settings_help"):
        OmegaConf.register_new_resolver("seg.settings_help", settings_of)


# -- seg-compare --help: the presets ---------------------------------------------------------


def preset_lines(folder: Path, costs: Mapping[str, str], width: int = 100) -> list[str]:
    """Each preset in ``folder`` (configs/compare/): ``compare=NAME`` beside the first
    sentence of its file's header comment, then what it costs, ``costs[NAME]`` (figures
    as measured and written down), else "cost not measured". A preset is listed as soon
    as its file is there."""
    paths = sorted(folder.glob("*.yaml"))
    column = 2 + max((len(f"compare={path.stem}") for path in paths), default=0) + 2
    lines = []
    for path in paths:
        header, _ = read_comments(path.read_text())
        about = printable(first_sentence(header)) or "(its file has no header comment)"
        cost = costs.get(path.stem, "cost not measured")
        text = textwrap.wrap(about, width - column) + textwrap.wrap(cost, width - column)
        lines += [f"  compare={path.stem}".ljust(column) + text[0],
                  *(" " * column + line for line in text[1:])]
    return lines
