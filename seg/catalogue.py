"""Catalogues of parts: one per kind (encoders, decoders, upsamplers, dataset readers,
losses), each filled where its parts are defined.

A part registers itself by name with the arguments its name fixes, and what its kind
records about it besides how to build it (an encoder's pretrained weights)::

    @ENCODERS.register("resnet50", depth=50, record=Pretrained(...))
    class ResNetEncoder(Encoder): ...

A config names a part and its options (``{"name": "resnet50", "output_stride": 8}``);
:meth:`Catalogue.read` checks such a node, whoever wrote it (a command line, or a
checkpoint, which is data and never decides which code runs: it can only pick a name of
the catalogue, with options of its builder's signature and of their defaults' kinds), and
:meth:`Catalogue.build` builds the part. Training, reloading, ``--help`` and the tests
all read the same catalogue.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from numbers import Real

from seg.errors import BadValue
from seg.settings import is_int

NO_DEFAULT = ...  # an option without a default: a name or a path, given by the config


@dataclass(frozen=True)
class Entry:
    """A registered part: its builder, the arguments its name fixes, and its ``record``:
    what the part's kind keeps about it besides how to build it (for an encoder, its
    pretrained record, seg.models.encoders.Pretrained), None where it keeps nothing."""

    builder: Callable
    fixed: Mapping[str, object] = field(default_factory=dict)
    record: object = None


def fits(value: object, default: object) -> bool:
    """Whether ``value`` is of the plain kind of ``default``: bool, int, number, string,
    or a sequence of as many such values; None and strings where there is no default."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if is_int(default):
        return is_int(value)
    if isinstance(default, Real):
        return isinstance(value, Real) and not isinstance(value, bool)
    if isinstance(default, tuple | list):
        return (isinstance(value, list | tuple) and len(value) == len(default)
                and all(fits(v, d) for v, d in zip(value, default, strict=True)))
    # str, None or no default: a name or a path
    return value is None or isinstance(value, str | int | float)


class Catalogue:
    """The parts of one ``kind``, by name. ``given``: the builder arguments the caller
    supplies (a decoder's channels, an upsampler's factor), which no config sets;
    ``name_key``: the key that names the part in a config node; ``extra_options``: options
    the kind's build step takes besides the builder's own (an encoder's ``weights``)."""

    def __init__(self, kind: str, given: Iterable[str] = (), name_key: str = "name",
                 extra_options: Mapping[str, object] | None = None) -> None:
        self.kind, self.name_key = kind, name_key
        self.given = frozenset(given)
        self.extra_options = dict(extra_options or {})
        self.entries: dict[str, Entry] = {}

    def register(self, name: str, /, *, record: object = None, **fixed: object) -> Callable:
        """Decorator: make the class or function it decorates buildable as ``name``,
        with ``fixed`` arguments that no config can set, and the entry's ``record``."""

        def register(builder: Callable) -> Callable:
            if name in self.entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self.entries[name] = Entry(builder, dict(fixed), record)
            return builder

        return register

    @property
    def article(self) -> str:
        """``an encoder``, ``a decoder``: the kind with its indefinite article."""
        return f"{'an' if self.kind[0] in 'aeiou' else 'a'} {self.kind}"

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.entries)

    def entry(self, name: object, where: str | None = None) -> Entry:
        """The entry registered as ``name``; unknown: one line naming the valid ones."""
        if name not in self.entries:
            key = f"{where}.{self.name_key}={name!r}" if where else f"{self.kind} {name!r}"
            raise BadValue(f"{key}: unknown {self.kind}, valid names are "
                           f"{', '.join(self.names())} (one of your own: pass "
                           "imports=[ITS_MODULE])")
        return self.entries[name]

    def options(self, name: str) -> dict[str, object]:
        """The options a config may give part ``name``, each with its default
        (:data:`NO_DEFAULT` when it has none): its builder's arguments, less those its
        name fixes and those the caller gives, and the kind's extra options."""
        entry = self.entry(name)
        options = dict(self.extra_options)
        for parameter in inspect.signature(entry.builder).parameters.values():
            if (parameter.name in entry.fixed or parameter.name in self.given
                    or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)):
                continue
            empty = parameter.default is inspect.Parameter.empty
            options[parameter.name] = NO_DEFAULT if empty else parameter.default
        return options

    def read(self, node: object, where: str) -> tuple[str, dict[str, object]]:
        """``(name, options)`` of a config node that names a part of this catalogue: a
        mapping with the name under ``name_key`` and only options of that part, each of
        the kind of its default. ``where`` is the node's config key, for the errors."""
        if not isinstance(node, Mapping):
            raise BadValue(f"{where} is not a config node naming {self.article} "
                           f"(got {type(node).__name__})")
        if "_target_" in node:
            raise BadValue(f"{where}._target_={node['_target_']!r}: {self.article} is named from "
                           f"its catalogue ({where}.{self.name_key}), never by code to run")
        name = node.get(self.name_key)
        self.entry(name, where)
        allowed = self.options(name)
        options = {}
        for key, value in node.items():
            if key == self.name_key:
                continue
            if key not in allowed:
                raise BadValue(f"{where}.{key} is not an option of the {name} {self.kind}: "
                               f"use {', '.join(allowed) or 'none'}")
            if not fits(value, allowed[key]):
                raise BadValue(f"{where}.{key}={value!r} is not of the kind of its default "
                               f"{allowed[key]!r}")
            options[key] = value
        return name, options

    def build(self, name: str, /, **arguments: object) -> object:
        """Part ``name`` built with ``arguments`` (its options and the given ones)."""
        entry = self.entry(name)
        unknown = sorted(set(arguments) - set(self.options(name)) - self.given)
        if unknown:
            raise BadValue(f"{unknown[0]} is not an option of the {name} {self.kind}: use "
                           f"{', '.join(self.options(name)) or 'none'}")
        return entry.builder(**entry.fixed, **arguments)

    def build_from(self, node: object, where: str, **given: object) -> object:
        """The part a config node names (see :meth:`read`), built with the ``given``
        arguments."""
        name, options = self.read(node, where)
        return self.build(name, **options, **given)
