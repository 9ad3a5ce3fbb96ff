"""Checkpoints: atomic saves, loads that only read data, and which run folder may be used."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from seg.data.base import IGNORE_INDEX
from seg.distributed import barrier
from seg.errors import BadValue, MissingPath


@dataclass
class RunInfo:
    """What a checkpoint carries besides weights, so it can be used on its own."""

    class_names: list[str]
    palette: list[list[int]]
    mean: list[float]
    std: list[float]
    config: dict = field(default_factory=dict)
    ignore_index: int = IGNORE_INDEX


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: into a temporary file, flushed to disk, then renamed over the old
    one, so that a kill or crash during the save leaves the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself reaches the disk
    finally:
        os.close(directory)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint's contents, read as data only (``weights_only``: no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise MissingPath(f"checkpoint {path} not found: pass the path of a run's "
                          "checkpoints/last.pt or best.pt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if path.stat().st_size == 0:
            reason = "the file is empty"
        raise BadValue(f"checkpoint {path} cannot be read ({reason}): use another one, "
                       "e.g. checkpoints/best.pt of the same run") from None


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
    waits, so that no rank runs ahead of a save."""

    def __init__(self, folder: Path, is_main: bool = True) -> None:
        self.folder = Path(folder)
        self.is_main = is_main

    def save(self, name: str, state: Callable[[], dict]) -> Path:
        path = self.folder / name
        if self.is_main:
            save_checkpoint(path, state())
        barrier()
        return path


def resume_path(resume: bool | str | None, run_dir: Path) -> Path | None:
    """The checkpoint ``trainer.resume`` names: false/None nothing, true this run folder's
    last.pt, ``auto`` that file if it exists, else a checkpoint file or a run folder."""
    if resume is False or resume is None:
        return None
    if resume in (True, "auto"):
        path = run_dir / "checkpoints" / "last.pt"
        if resume == "auto" and not path.is_file():
            return None
    else:
        path = Path(resume)
        path = path / "checkpoints" / "last.pt" if path.is_dir() else path
    if not path.is_file():
        raise MissingPath(
            f"trainer.resume: no checkpoint at {path}; set trainer.resume to a run folder or "
            "checkpoint file, or run in the old folder with hydra.run.dir=<run folder>"
        )
    return path


def earlier_run(run_dir: Path) -> Path | None:
    """What shows that ``run_dir`` already holds a run: a checkpoint, metrics.json or
    TensorBoard events (Hydra's own .hydra/ and log file do not count)."""
    found = [*sorted(run_dir.glob("checkpoints/*.pt")), run_dir / "metrics.json",
             *sorted(run_dir.glob("tb/events.out.tfevents.*"))]
    return next((path for path in found if path.is_file()), None)


def earlier_run_problem(run_dir: Path, resume_from: Path | None, restart: bool = False
                        ) -> str | None:
    """Why training into ``run_dir`` would replace an earlier run, or None: it holds one,
    and the run does not continue it (from one of its own checkpoints). ``restart``
    (``resume=auto``) may start afresh over a run that left only TensorBoard events: a
    requeued job killed before its first checkpoint."""
    found = earlier_run(run_dir)
    if found is None or (restart and found.parent.name == "tb"):
        return None
    if resume_from is not None and resume_from.resolve().is_relative_to(run_dir.resolve()):
        return None
    return (f"run folder {run_dir} already holds a run ({found.relative_to(run_dir)}): "
            f"continue it with trainer.resume={run_dir}, or train into a new folder "
            "(another hydra.run.dir, or none for a dated one)")
