"""Checkpoints: atomic saves, and loads that only read data."""

from __future__ import annotations

import logging
import os
import pickle
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from seg.data.labels import IGNORE_INDEX
from seg.engine.distributed import barrier, broadcast_from_main
from seg.errors import BadValue, MissingPath, NonFiniteLoss
from seg.files import TEMPORARY_NAME, write_file
from seg.settings import is_int

# 2: a config names each part (encoder, decoder, upsampler, loss) from its catalogue by
# ``name``, with no ``_target_``; 1: every checkpoint written before the field existed
CHECKPOINT_FORMAT = 2
FORMAT_CHANGES = "parts named from catalogues, not by _target_"

log = logging.getLogger(__name__)


@dataclass
class RunInfo:
    """What a checkpoint carries besides weights, so it can be used on its own, and the
    version of its format (:data:`CHECKPOINT_FORMAT`)."""

    class_names: list[str]
    palette: list[list[int]]
    mean: list[float]
    std: list[float]
    config: dict = field(default_factory=dict)
    ignore_index: int = IGNORE_INDEX
    # each part's option and what differs from it (seg.run_names): which run this is
    configuration: dict[str, str] = field(default_factory=dict)
    format: int = field(default_factory=lambda: CHECKPOINT_FORMAT)


def check_checkpoint_format(state: dict, path: str | Path) -> None:
    """Refuse a checkpoint of another format version than this seg writes, naming both."""
    version = state.get("format", 1)
    if version != CHECKPOINT_FORMAT:
        raise BadValue(
            f"checkpoint {path} is format {version}, written by "
            f"{'an earlier' if is_int(version) and version < CHECKPOINT_FORMAT else 'another'}"
            f" seg; this one reads format {CHECKPOINT_FORMAT} ({FORMAT_CHANGES}): train it "
            "again with this version, or use the seg release that wrote it")


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically (seg.files.write_file): a kill, a crash or a full disk during the
    save leaves the previous file intact and no partial file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, lambda file: torch.save(state, file))


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """A checkpoint's contents, read as data only (``weights_only``: no pickled code runs).
    ``mmap`` maps the file instead of reading it: for a look at its iteration."""
    path = Path(path)
    if not path.is_file():
        raise MissingPath(f"checkpoint {path} not found: pass the path of a run's "
                          "checkpoints/last.pt or best.pt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as error:
        raise BadValue(f"checkpoint {path} cannot be read ({unreadable_reason(path, error)}): "
                       f"{other_checkpoint_hint(path)}") from None


def unreadable_reason(path: Path, error: BaseException) -> str:
    """What is wrong with a checkpoint torch cannot load, in seg's words: torch's own
    advice (load it with weights_only=False, which would run any code it holds) is never
    what to do with a file someone handed over."""
    if path.stat().st_size == 0:
        return "the file is empty"
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in str(error):
        return "it holds objects other than tensors and plain data, which seg never loads"
    return "it is truncated or damaged, or not a file torch.save wrote"


def other_checkpoint_hint(path: Path) -> str:
    """What to use instead: the run's other checkpoint when it is there."""
    other = path.with_name("best.pt" if path.name == "last.pt" else "last.pt")
    if path.parent.name == "checkpoints" and other.is_file() and other != path:
        return f"use another one, e.g. {other}"
    return "use a checkpoints/last.pt or best.pt that seg-train wrote"


def load_model_state(model: nn.Module, state_dict: dict, source: str | Path) -> None:
    """Load weights, or say which keys do not fit (a checkpoint of another model config)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    reshaped = [f"{key} {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}"
                for key in own if key in state_dict and state_dict[key].shape != own[key].shape]
    if missing or unexpected or reshaped:
        parts = [f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("other shape (checkpoint vs model)", reshaped)) if keys]
        raise BadValue(f"{source} was saved by another model configuration ({'; '.join(parts)}"
                       "): use the model settings it was trained with (its run's "
                       ".hydra/config.yaml)")
    model.load_state_dict(state_dict)


class Checkpointer:
    """Saves a run's checkpoints into ``folder``: the main process writes, every process
    waits, so that no rank runs ahead of a save. ``keep`` names files to move aside
    before they are first replaced (``{"last.pt": "last_iteration_6.pt"}``: a rewound
    run keeps the training it goes back from), each under a name no file has yet
    (:func:`free_name`): nothing kept is ever replaced. A state holding a NaN or an
    infinity is never written (:func:`first_nonfinite`)."""

    def __init__(self, folder: Path, is_main: bool = True, keep: dict[str, str] | None = None
                 ) -> None:
        self.folder = Path(folder)
        self.is_main = is_main
        self.keep = dict(keep or {})

    def save(self, name: str, state: Callable[[], dict]) -> Path:
        path = self.folder / name
        problem = None
        if self.is_main:
            content = state()
            problem = nonfinite_problem(content, path)
            if problem is None:
                self.keep_aside(name)
                save_checkpoint(path, content)
        # every process learns of a refusal, or the others would wait at the barrier
        problem = broadcast_from_main(problem)
        if problem is not None:
            raise NonFiniteLoss(problem)
        barrier()
        return path

    def keep_aside(self, name: str) -> None:
        """Move ``name`` aside as ``keep`` says, under a name of its own, once."""
        path = self.folder / name
        if name not in self.keep or not path.is_file():
            return
        kept = move_to_free_name(path, self.folder / self.keep.pop(name))
        log.info("kept the earlier %s as %s", name, kept)


def free_name(path: Path) -> Path:
    """``path`` when no file has that name, else the first free ``stem_2.suffix``,
    ``stem_3.suffix``... in its folder (``last_iteration_6_2.pt``)."""
    candidate, number = path, 1
    while os.path.lexists(candidate):
        number += 1
        candidate = path.with_name(f"{path.stem}_{number}{path.suffix}")
    return candidate


def move_to_free_name(source: Path, wanted: Path) -> Path:
    """Rename ``source`` to ``wanted`` or, that name taken, the next free one
    (:func:`free_name`). A hard link is made first, which fails rather than replace a
    file that appeared meanwhile; then ``source`` goes."""
    while True:
        target = free_name(wanted)
        try:
            os.link(source, target, follow_symlinks=False)
        except FileExistsError:
            continue  # taken since free_name looked: the next one
        except OSError:  # a file system without hard links: the lock keeps others out
            os.rename(source, target)
            return target
        os.unlink(source)
        return target


def nonfinite_problem(state: dict, path: Path) -> str | None:
    """Why ``state`` must not be saved as ``path``: its weights, batch-norm statistics or
    optimizer state hold a NaN or an infinity (a checkpoint that cannot be used, saved
    over a good one); None when every number is finite."""
    tensors = {f"model.{key}": value for key, value in state.get("model", {}).items()}
    for index, values in state.get("optimizer", {}).get("state", {}).items():
        tensors.update({f"optimizer.state.{index}.{key}": value
                        for key, value in values.items()})
    key = first_nonfinite(tensors)
    if key is None:
        return None
    return (f"refusing to save {path}: {key} holds a NaN or an infinity (training "
            f"diverged); {path.parent} keeps its earlier checkpoints: lower optimizer.lr, set "
            "trainer.grad_clip, or trainer.on_nan=skip, then resume from the last good one")


def first_nonfinite(tensors: dict[str, object]) -> str | None:
    """The first key whose floating-point tensor holds a NaN or an infinity, or None.
    One wait for each device the tensors are on, whatever their number."""
    flags = {key: torch.isfinite(value).all() for key, value in tensors.items()
             if isinstance(value, torch.Tensor) and value.is_floating_point()}
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for flag in flags.values():
        by_device.setdefault(flag.device, []).append(flag)
    if all(bool(torch.stack(group).all()) for group in by_device.values()):
        return None
    return next(key for key, flag in flags.items() if not flag)


def remove_unfinished_saves(folder: Path) -> list[Path]:
    """Remove what saves into ``folder`` that a kill cut off left behind: plain files of
    write_file's temporary names, nothing else (never a link, never another name). Only
    the run holding the folder's lock calls it: no save of another process is under way."""
    removed = []
    for path in sorted(folder.glob(".*.tmp")) if folder.is_dir() else ():
        if TEMPORARY_NAME.fullmatch(path.name) and stat.S_ISREG(os.lstat(path).st_mode):
            path.unlink()
            removed.append(path)
            log.info("removed %s, what a save cut off by a kill left behind", path.name)
    return removed
