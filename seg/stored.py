"""What a checkpoint stores, read as data: a checkpoint never decides which code runs.

A checkpoint carries the resolved training config. seg-predict, seg-eval, seg-export and
seg-compare rebuild the model as training built it (seg.models.model_from_config: every
part a name from its catalogue, every argument checked against the kind of its
constructor's default), and the dataset it names from the registered readers. A stored
``_target_`` is only compared with the one seg writes; it is never imported or called.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from numbers import Real
from pathlib import Path

import torch

from seg.checks import is_int
from seg.data import (
    ADE20K,
    Cityscapes,
    FolderSegmentation,
    SegmentationDataset,
    VOCAugSegmentation,
    VOCSegmentation,
    eval_transform,
)
from seg.data.base import IGNORE_INDEX
from seg.engine import load_checkpoint, load_model_state
from seg.engine.checkpoints import check_checkpoint_format
from seg.errors import BadValue
from seg.models import SegmentationModel, model_from_config

READERS: dict[str, type[SegmentationDataset]] = {
    f"seg.data.{reader.__name__}": reader
    for reader in (VOCSegmentation, VOCAugSegmentation, Cityscapes, ADE20K, FolderSegmentation)
}
# What the caller decides, never the stored config.
NOT_STORED = {"self", "channels", "factor", "in_channels", "strides", "num_classes",
              "upsampler", "depth", "transform"}
TRAINED_FIELDS = ("model", "config", "class_names", "palette", "mean", "std")
FIX = "pass a checkpoints/best.pt or last.pt written by seg-train"


# -- typed arguments -------------------------------------------------------------------------


def constructor_defaults(builder: Callable) -> dict[str, object]:
    """The keyword arguments ``builder`` takes, each with its default (``...`` when it
    has none, which then takes a path or a name: a string, or None)."""
    return {name: ... if p.default is inspect.Parameter.empty else p.default
            for name, p in inspect.signature(builder).parameters.items()
            if name not in NOT_STORED and p.kind is not inspect.Parameter.VAR_KEYWORD}


def fits(value: object, default: object) -> bool:
    """Whether ``value`` is of the plain kind of ``default``: bool, int, number, string,
    or a sequence of as many such values."""
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


def check_target(node: object, where: str, target: str) -> None:
    """``node`` is a config node whose ``_target_``, if any, is the one seg writes."""
    if not isinstance(node, Mapping):
        raise BadValue(f"{where} is not a config node (got {type(node).__name__}); {FIX}")
    stored_target = node.get("_target_", target)
    if stored_target != target:
        raise BadValue(f"{where}._target_ is {stored_target!r}, not {target!r}: a checkpoint "
                       f"names seg's own parts and never code to run; {FIX}")


def checked_options(node: object, allowed: Mapping[str, object], where: str, target: str
                    ) -> dict:
    """The arguments of ``node`` (a stored config node): each one of ``allowed`` (name ->
    default) and of its default's kind; ``_target_``, if any, must be the one seg writes."""
    check_target(node, where, target)
    options = {}
    for key, value in node.items():
        if key in ("_target_", "_partial_") or key in NOT_STORED:
            continue
        if key not in allowed:
            raise BadValue(f"{where}.{key} is not one of its arguments "
                           f"({', '.join(allowed)}); {FIX}")
        if not fits(value, allowed[key]):
            raise BadValue(f"{where}.{key}={value!r} is not of the kind of its default "
                           f"{allowed[key]!r}; {FIX}")
        options[key] = value
    return options


# -- the checkpoint --------------------------------------------------------------------------


def load_trained(path: str | Path) -> dict:
    """A checkpoint written by seg-train, its fields checked: raises ``ValueError`` with
    one line saying what the file holds instead."""
    state = load_checkpoint(path)
    if not isinstance(state, dict):
        raise BadValue(f"checkpoint {path} holds a {type(state).__name__}, not a seg "
                       f"checkpoint; {FIX}")
    missing = [key for key in TRAINED_FIELDS if key not in state]
    if missing and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadValue(f"checkpoint {path} holds only weights (a state_dict), without the "
                       f"config, classes and colours to use them; {FIX}")
    if missing:
        raise BadValue(f"checkpoint {path} has no {', '.join(missing)}; {FIX}")
    check_checkpoint_format(state, path)
    check_run_info(state, path)
    return state


def check_run_info(state: dict, path: str | Path) -> None:
    """The fields seg-predict and seg-eval read beside the weights are of their kinds."""
    names, palette = state["class_names"], state["palette"]
    problems = {
        "model": isinstance(state["model"], dict)
        and all(isinstance(v, torch.Tensor) for v in state["model"].values()),
        "config": isinstance(state["config"], dict),
        "class_names": isinstance(names, list) and 0 < len(names) <= 256
        and all(isinstance(n, str) for n in names),
        "palette": isinstance(palette, list) and len(palette) >= len(names)
        and all(fits(colour, (0, 0, 0)) and min(colour) >= 0 and max(colour) <= 255
                for colour in palette),
        "mean": fits(state["mean"], (0.0, 0.0, 0.0)),
        "std": fits(state["std"], (0.0, 0.0, 0.0)) and min(state["std"]) > 0,
        "ignore_index": is_int(state.get("ignore_index", IGNORE_INDEX)),
        "iteration": is_int(state.get("iteration", 0)),
    }
    bad = [key for key, ok in problems.items() if not ok]
    if bad:
        raise BadValue(f"checkpoint {path}: {', '.join(bad)} not as seg-train writes it; {FIX}")


def model_from_checkpoint(state: dict, source: str | Path = "the checkpoint"
                          ) -> SegmentationModel:
    """The trained model of a loaded checkpoint (see :func:`load_trained`)."""
    try:
        model = model_from_config(state["config"].get("model"), len(state["class_names"]),
                                  weights=False)
    except BadValue as error:
        raise BadValue(f"checkpoint {source}: {error}; {FIX}") from None
    load_model_state(model, state["model"], source)
    return model


# -- the dataset -----------------------------------------------------------------------------


def stored_reader(state: dict) -> tuple[type[SegmentationDataset], dict]:
    """The checkpoint's validation reader and its checked arguments."""
    data = state["config"].get("dataset")
    node = data.get("val") if isinstance(data, Mapping) else None
    target = node.get("_target_") if isinstance(node, Mapping) else None
    if target not in READERS:
        raise BadValue(f"dataset.val._target_={target!r}: a checkpoint's dataset is read by "
                       f"one of {', '.join(READERS)}; {FIX}")
    options = checked_options(node, constructor_defaults(READERS[target]), "dataset.val",
                              target)
    if not isinstance(options.get("root"), str):
        raise BadValue(f"dataset.val.root={options.get('root')!r} is not a folder name; {FIX}")
    return READERS[target], options


def dataset_from_stored(state: dict, split: str, root: str | Path | None = None
                        ) -> SegmentationDataset:
    """The checkpoint's validation reader for ``split`` (under ``root`` when given, else
    where it was trained), with evaluation transforms from the checkpoint's mean and std."""
    reader, options = stored_reader(state)
    options.update(split=split, root=str(root if root is not None else options["root"]))
    return reader(**options, num_classes=len(state["class_names"]),
                  transform=eval_transform(mean=state["mean"], std=state["std"]))
