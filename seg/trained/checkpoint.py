"""What a checkpoint stores, read as data: a checkpoint never decides which code runs.

A checkpoint carries the resolved training config. seg-predict, seg-eval, seg-export and
seg-compare rebuild the model as training built it (seg.models.model_from_config: every
part a name from its catalogue, every argument checked against the kind of its
constructor's default), and the dataset from the reader it names (seg.data.readers). A
stored ``_target_`` is refused; it is never imported or called.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from seg.catalogue import fits
from seg.data.base import SegmentationDataset
from seg.data.labels import IGNORE_INDEX
from seg.data.readers import catalogue
from seg.data.transforms import eval_transform
from seg.engine import load_checkpoint, load_model_state
from seg.engine.checkpoints import check_checkpoint_format
from seg.errors import BadValue
from seg.models import SegmentationModel, model_from_config
from seg.settings import is_int

TRAINED_FIELDS = ("model", "config", "class_names", "palette", "mean", "std")
FIX = "pass a checkpoints/best.pt or last.pt written by seg-train"


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


def model_from_checkpoint(state: dict, source: str | Path | None = None
                          ) -> SegmentationModel:
    """The trained model of a loaded checkpoint (see :func:`load_trained`), normalising its
    input with the checkpoint's mean and std."""
    try:
        model = model_from_config(state["config"].get("model"), len(state["class_names"]),
                                  weights=False, mean=state["mean"], std=state["std"])
    except BadValue as error:
        where = f"checkpoint {source}" if source is not None else "checkpoint"
        raise BadValue(f"{where}: {error}; {FIX}") from None
    load_model_state(model, state["model"], source or "the checkpoint")
    return model


# -- the dataset -----------------------------------------------------------------------------


def stored_reader(state: dict) -> tuple[str, dict]:
    """The checkpoint's validation reader: its name and its checked options."""
    data = state["config"].get("dataset")
    node = data.get("val") if isinstance(data, Mapping) else None
    try:
        name, options = catalogue().read(node, "dataset.val")
    except BadValue as error:
        raise BadValue(f"checkpoint: {error}; {FIX}") from None
    if not isinstance(options.get("root"), str):
        raise BadValue(f"dataset.val.root={options.get('root')!r} is not a folder name; {FIX}")
    return name, options


def dataset_from_stored(state: dict, split: str, root: str | Path | None = None,
                        on_error: str | None = None) -> SegmentationDataset:
    """The checkpoint's validation reader for ``split`` (under ``root`` when given, else
    where it was trained), with evaluation transforms from the checkpoint's mean and std.
    A bad image stops the reading (``on_error="raise"``) or is left out (``"skip"``), as
    in training unless ``on_error`` says otherwise (seg-eval's setting)."""
    name, options = stored_reader(state)
    options.update(split=split, root=str(root if root is not None else options["root"]),
                   num_classes=len(state["class_names"]))
    if on_error is not None:
        options["on_error"] = on_error
    return catalogue().build(name, **options,
                             transform=eval_transform(mean=state["mean"], std=state["std"]))
