"""Resuming a run: which checkpoint ``trainer.resume`` names, and what a resume must
not do: replace another run, move a run backwards, or drop a changed setting silently."""

from __future__ import annotations

from pathlib import Path

from seg.engine.checkpoints import free_name, load_checkpoint
from seg.errors import BadValue, MissingPath

# What a resumed run takes from its checkpoint, whatever the command line says: the
# weights (model), the optimizer's state and hyper-parameters (the learning rates of
# encoder_lr_mult's groups among them), the random states (seed) and the classes. A
# change to any of them would be silently dropped, so it is refused. Everything else (the
# schedule's length and shape, the loss, the data and augmentation, the trainer's
# settings) is read from the command line and applies from the resumed iteration on.
FROM_CHECKPOINT = ("model", "optimizer", "encoder_lr_mult", "seed", "dataset.class_names",
                   "dataset.num_classes")
# ...except what only says where files were: the weights a model started from.
NOT_COMPARED = ("model.encoder.weights",)


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


def newer_last_checkpoint(run_dir: Path, resume_from: dict) -> int | None:
    """The iteration of ``run_dir``'s last.pt when ``resume_from`` is an older checkpoint
    of the same folder (best.pt, usually): resuming from it would overwrite the newer
    training. None otherwise."""
    path = Path(resume_from["path"]).resolve()
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file() or path == last.resolve() or not path.is_relative_to(
            run_dir.resolve()):
        return None
    newest = load_checkpoint(last, mmap=True)["iteration"]
    return newest if newest > resume_from["iteration"] else None


def rewind_message(run_dir: Path, resume_from: dict, newest: int) -> str:
    last = run_dir / "checkpoints" / "last.pt"
    return (f"trainer.resume={resume_from['path']} is at iteration {resume_from['iteration']}"
            f" but {last} is at iteration {newest}: resuming would discard the newer "
            f"training. Resume from the newest (trainer.resume={run_dir}), into another "
            "folder (hydra.run.dir=PATH), or go back on purpose with trainer.rewind=true "
            f"(keeps last.pt as {free_name(last.with_name(f'last_iteration_{newest}.pt')).name}"
            "; nothing kept is replaced)")


def select(config: dict, key: str) -> object:
    """``config``'s value at the dotted ``key``; ``KeyError`` where it has none."""
    for part in key.split("."):
        if not isinstance(config, dict):
            raise KeyError(key)
        config = config[part]
    return config


def leaves(value: object, key: str) -> dict[str, object]:
    """Every setting under ``key`` in ``value``, flattened to dotted keys."""
    if not isinstance(value, dict):
        return {key: value}
    return {name: leaf for child, item in value.items()
            for name, leaf in leaves(item, f"{key}.{child}").items()}


def changed_settings(stored: dict, config: dict) -> list[tuple[str, object, object]]:
    """``(key, in the checkpoint, now)`` for each setting of :data:`FROM_CHECKPOINT` that
    differs. Keys the checkpoint does not hold (an earlier version's, such as an option
added since) are not compared."""
    changed = []
    for key in FROM_CHECKPOINT:
        try:
            before, now = leaves(select(stored, key), key), leaves(select(config, key), key)
        except KeyError:
            continue
        # a leaf the checkpoint lacks is a key added since (its default stands for it)
        changed += [(name, before[name], now.get(name)) for name in sorted(before)
                    if before[name] != now.get(name) and not name.startswith(NOT_COMPARED)]
    return changed


def refuse_changed_settings(resume_from: dict, config: dict) -> None:
    """A resume whose command line changes what the checkpoint decides is refused, one
    line naming the first such setting (see :data:`FROM_CHECKPOINT`)."""
    changed = changed_settings(resume_from.get("config") or {}, config)
    if not changed:
        return
    key, before, now = changed[0]
    more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
    raise BadValue(f"{key}={now!r}{more} but the run being resumed has {before!r}, and a "
                   "resumed run keeps its checkpoint's model, optimizer, random state and "
                   f"classes: drop the override, or start a new run (without trainer.resume)")
