"""Which configuration a run is, in words: for each part, the option of its config group
(``configs/model/upsampler/dysample.yaml``: ``dysample``) and the options that differ from
that file (``dysample dynamic_scope=true``). Training records these labels in
metrics.json, the checkpoints and TensorBoard's HParams; the study pairs and labels its
runs by them, so that two variants of one upsampler are two configurations, never one
averaged under a shared name.

The option is the one Hydra chose (its runtime choices) where the caller knows it;
otherwise the shipped option that the part's node matches best: the one it equals, else
the one with the part's ``name`` from which the fewest keys differ.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib.resources import files

import yaml

# each part: where it sits in a composed config, and the config group of its options
PARTS = {"encoder": ("model.encoder", "model/encoder"),
         "decoder": ("model.decoder", "model/decoder"),
         "upsampler": ("model.upsampler", "model/upsampler"),
         "final_upsampler": ("model.final_upsampler", "model/upsampler"),
         "loss": ("loss", "loss")}


@cache
def shipped_options(group: str) -> dict[str, dict]:
    """Every option of a config group as its YAML file composes it (plain data): the
    group-relative ``defaults`` first, then the file's own keys, as Hydra merges them.
    ``# @package`` lines and Hydra's ``defaults`` are not options."""
    folder = files("seg.configs").joinpath(*group.split("/"))
    raw = {path.name.removesuffix(".yaml"): yaml.safe_load(path.read_text(encoding="utf-8"))
           or {} for path in folder.iterdir() if path.name.endswith(".yaml")}
    return {option: composed(option, raw) for option in raw}


def composed(option: str, raw: dict[str, dict], seen: tuple[str, ...] = ()) -> dict:
    """``option``'s keys with those of the options its ``defaults`` list (same group)."""
    node = dict(raw[option])
    merged: dict = {}
    for entry in node.pop("defaults", []) or []:
        if entry == "_self_" or not isinstance(entry, str) or entry in seen + (option,):
            continue
        if entry in raw:
            merged.update(composed(entry, raw, (*seen, option)))
    merged.update(node)
    return merged


def part_label(group: str, node: Mapping, choice: str | None = None) -> str:
    """``node``'s option in ``group`` and what differs from it, e.g. ``dysample
    dynamic_scope=true``, ``resize_conv mode=nearest``, or ``transposed_kaiming`` alone."""
    options = shipped_options(group)
    if choice not in options:
        choice = closest_option(node, options)
    if choice is None:
        return str(node.get("name", "?"))
    changed = differences(options[choice], node)
    return " ".join([choice, *(f"{key}={value}" for key, value in changed)])


def closest_option(node: Mapping, options: dict[str, dict]) -> str | None:
    """The shipped option ``node`` equals, else the one of the same ``name`` it differs
    from in the fewest keys (ties: the shortest option name, the plain part first)."""
    same_name = [option for option, shipped in options.items()
                 if shipped.get("name") == node.get("name")]
    if not same_name:
        return None
    return min(same_name, key=lambda option: (len(differences(options[option], node)),
                                              len(option), option))


def differences(shipped: Mapping, node: Mapping, prefix: str = "") -> list[tuple[str, str]]:
    """The keys (dotted where nested) whose values in ``node`` are not those of
    ``shipped``, with ``node``'s values written as on a command line; sorted."""
    changed = []
    for key in sorted(set(shipped) | set(node), key=str):
        before, now = shipped.get(key), node.get(key)
        if isinstance(before, Mapping) and isinstance(now, Mapping):
            changed += differences(before, now, f"{prefix}{key}.")
        elif before != now and key in node:
            changed.append((f"{prefix}{key}", written(now)))
    return changed


def written(value: object) -> str:
    """A value as a command line writes it: ``true``, ``null``, ``0.5``, ``[1,2]``, ``name``."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def configuration(config: Mapping, choices: Mapping[str, str] | None = None
                  ) -> dict[str, str]:
    """Each part of a run's plain config, labelled (:func:`part_label`): ``{"encoder":
    "simple_small", "decoder": "fcn8s", "upsampler": "dysample dynamic_scope=true",
    "loss": "ce"}`` (and ``final_upsampler`` where the run set one). ``choices``: Hydra's
    runtime choices, where the run had them."""
    choices = choices or {}
    labels = {}
    for part, (location, group) in PARTS.items():
        node = config
        for key in location.split("."):
            node = node.get(key) if isinstance(node, Mapping) else None
        # Hydra's name for a group placed elsewhere: model/upsampler@model.final_upsampler
        choice = group if location == group.replace("/", ".") else f"{group}@{location}"
        if isinstance(node, Mapping):
            labels[part] = part_label(group, node, choices.get(choice))
    return labels
