"""Resuming a run: which checkpoint ``trainer.resume`` names, and what a resume must
not do: replace another run, move a run backwards, or drop a changed setting silently."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ResumeCommand:
    """What the command line of a resume did, for a refusal that names it: the option of
    each config group (Hydra's runtime choices, ``model/upsampler@model.final_upsampler``
    style) in the run being resumed and now, and the command line's own overrides by the
    key or group they set (``trainer.resume`` left out)."""

    run_choices: Mapping[str, str | None]
    choices: Mapping[str, str | None]
    given: Mapping[str, str]


KEEPS = ("a resumed run keeps its checkpoint's model, optimizer, random state and classes")
NEW_RUN = "start a new run (without trainer.resume)"


def refuse_changed_settings(resume_from: dict, config: dict,
                            command: ResumeCommand | None = None) -> None:
    """A resume whose config changes what the checkpoint decides is refused, one line
    naming the first such setting (see :data:`FROM_CHECKPOINT`), or the config group whose
    other option changed it. With the ``command`` line known, the fix it gives is to drop
    the override that changed it only where the command line gave one."""
    changed = changed_settings(resume_from.get("config") or {}, config)
    if not changed:
        return
    if command is not None:
        raise BadValue(group_refusal(changed, command) or setting_refusal(changed, command))
    key, before, now = changed[0]
    more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
    raise BadValue(f"{key}={now!r}{more} but the run being resumed has {before!r}, and "
                   f"{KEEPS}: drop the override, or {NEW_RUN}")


def package_of(setting: str) -> str:
    """Where a setting of the command line sits in the config: ``model/upsampler`` in
    ``model.upsampler``, ``model/upsampler@model.final_upsampler`` in its package, a key
    (``optimizer.lr``) at itself."""
    group, _, package = setting.partition("@")
    return package or group.replace("/", ".")


def holds(package: str, key: str) -> bool:
    return key == package or key.startswith(f"{package}.")


def option(choice: str | None) -> str:
    return "null" if choice is None else choice


def group_refusal(changed: list[tuple[str, object, object]], command: ResumeCommand
                  ) -> str | None:
    """The refusal naming the config group whose changed option changes the first setting
    that can change no more, e.g. ``model/upsampler is bilinear in the run, transposed
    here``; None where no group's option changed."""
    for key, _, _ in changed:
        for group, before in command.run_choices.items():
            now = command.choices.get(group, before)
            if now == before or not holds(package_of(group), key):
                continue
            others = sum(not holds(package_of(group), other) for other, _, _ in changed)
            more = f" (and {others} more setting(s))" if others else ""
            fix = (f"drop {command.given[group]}" if group in command.given
                   else f"resume with {group}={option(before)}")
            return (f"{group} is {option(before)} in the run, {option(now)} here{more}: "
                    f"{KEEPS} ({key} would change); {fix}, or {NEW_RUN}")
    return None


def setting_refusal(changed: list[tuple[str, object, object]], command: ResumeCommand
                    ) -> str:
    """The refusal naming the first changed setting; "drop the override" only where the
    command line gave one that sets it."""
    key, before, now = changed[0]
    more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
    given = next((override for setting, override in command.given.items()
                  if holds(package_of(setting), key)), None)
    if given is not None:
        return (f"{key}={now!r}{more} but the run being resumed has {before!r}, and {KEEPS}: "
                f"drop {given}, or {NEW_RUN}")
    return (f"{key} is {now!r} here but {before!r} in the run being resumed{more}, though the "
            f"command line does not set it (a config or data file changed since the run?): "
            f"{KEEPS}; put back what changed, or {NEW_RUN}")
