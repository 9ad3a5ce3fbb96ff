"""A resumed run's own config. ``seg-train trainer.resume=RUN trainer.max_iters=N``
composes what RUN was started with: the overrides in RUN/.hydra/overrides.yaml (a sweep
job's are its own) go ahead of the command line's, so that Hydra composes the run's
config and the command line changes it, not today's defaults (Lightning's ``ckpt_path``
and mmsegmentation's ``--resume`` take the config from the run too). They are put into
``sys.argv`` before Hydra parses it, as seg.cli.command.ask_help_of does."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException

from seg.cli.errors import refuse
from seg.cli.run_folder import resumed_run_folder
from seg.errors import UserError
from seg.files import read_yaml
from seg.text import printable

if TYPE_CHECKING:  # seg.engine loads torch, which a command's --help has no use for
    from seg.engine.resume import ResumeCommand

log = logging.getLogger("seg.train")

RESUME = "trainer.resume"
# Not taken from the run: which run to resume and whether to go back are this command's
# alone (an earlier resume's overrides.yaml holds them too), and Hydra's own settings
# (the run folder, the launcher) belong to the command that made it.
LEFT_OUT = (RESUME, "trainer.rewind")
ADDS = (OverrideType.ADD, OverrideType.FORCE_ADD)


@dataclass(frozen=True)
class ResumeLine:
    """A command line that sets ``trainer.resume``: its own overrides by the key or group
    they set and, where it resumes a run folder by path, that folder, the overrides taken
    from it and the option of each of its config groups (its .hydra/hydra.yaml)."""

    given: dict[str, str]
    folder: Path | None = None
    taken: tuple[str, ...] = ()
    choices: dict[str, str | None] = field(default_factory=dict)


# This process's command line, where it sets trainer.resume (take_run_config records it).
_resumed: list[ResumeLine] = []


def setting_of(override: Override) -> str:
    """The key or config group an override sets, e.g. ``optimizer.lr``,
    ``model/upsampler@model.final_upsampler`` (as Hydra's runtime choices name it)."""
    package = f"@{override.package}" if override.package else ""
    return f"{override.key_or_group}{package}"


def parsed_overrides(args: list[str]) -> list[tuple[int, Override]]:
    """The overrides among ``args`` with their positions. What does not parse as one is
    left to Hydra: a flag, a flag's value (``--cfg job``) or a malformed override, which
    Hydra reports."""
    parser = OverridesParser.create()
    found = []
    for index, arg in enumerate(args):
        if arg.startswith("-"):
            continue
        with contextlib.suppress(HydraException):
            found.append((index, parser.parse_override(arg)))
    return found


def take_run_config(argv: list[str]) -> None:
    """Where ``argv``'s ``trainer.resume`` names a run folder (or a checkpoint in one)
    whose .hydra/overrides.yaml Hydra wrote, put that run's overrides into ``argv`` just
    ahead of the command line's first override. Left out: ``trainer.resume``,
    ``trainer.rewind``, ``hydra.*`` and what the command line sets again (its own wins,
    and is checked as any change of a resumed run), except a key the run added
    (``+key=``) that the command line changes (``key=``), which the run's addition must
    still add. A run without those files (trained from Python) composes today's
    defaults, as before. Any command line that sets ``trainer.resume`` is recorded
    (:func:`resume_line`), for a refusal to say what it changed."""
    _resumed.clear()
    given = parsed_overrides(argv[1:])
    resumes = [override for _, override in given if setting_of(override) == RESUME]
    if not resumes:
        return
    own = {setting_of(override): override for _, override in given}
    lines = {setting: override.input_line for setting, override in own.items()
             if setting != RESUME}
    folder = None if resumes[-1].is_sweep_override() else resumed_run_folder(resumes[-1].value())
    if folder is None or not (folder / ".hydra" / "overrides.yaml").is_file():
        _resumed[:] = [ResumeLine(lines)]
        return
    taken = tuple(override.input_line for override in run_overrides(folder)
                  if kept(override, own.get(setting_of(override))))
    first = 1 + given[0][0]
    argv[first:first] = taken
    _resumed[:] = [ResumeLine(lines, folder, taken, run_choices(folder))]


def kept(override: Override, own: Override | None) -> bool:
    """Whether the run's ``override`` goes into the resume's command line, the command
    line's ``own`` override of the same setting, if any, after it."""
    setting = setting_of(override)
    if setting in LEFT_OUT or setting.split("/")[0].split(".")[0] == "hydra":
        return False
    return own is None or (override.type in ADDS and own.type == OverrideType.CHANGE)


def run_overrides(folder: Path) -> list[Override]:
    """The overrides the run in ``folder`` was started with (.hydra/overrides.yaml, as
    Hydra wrote it). A file that is not such a list is one line naming it."""
    path = folder / ".hydra" / "overrides.yaml"
    fix = ("restore it (Hydra writes there the overrides the run was started with), or "
           "delete it and give the run's settings on the command line")
    try:
        lines = read_yaml(path, "the run's overrides", kind=list, fix=fix)
        return OverridesParser.create().parse_overrides([str(line) for line in lines])
    except UserError as error:
        refuse(str(error))
    except HydraException as error:
        refuse(f"{printable(path)}: not the overrides Hydra writes "
               f"({printable(str(error).splitlines()[0])}): {fix}")


def run_choices(folder: Path) -> dict[str, str | None]:
    """The option of each config group of the run in ``folder`` (its .hydra/hydra.yaml's
    runtime choices), read before Hydra writes this command's over it; empty where the
    file does not say (a refusal then names settings, not groups)."""
    with contextlib.suppress(UserError):
        hydra = read_yaml(folder / ".hydra" / "hydra.yaml", "the run's Hydra config")
        choices = hydra.get("hydra", {}).get("runtime", {}).get("choices")
        if isinstance(choices, dict):
            return {str(group): None if choice is None else str(choice)
                    for group, choice in choices.items()}
    return {}


def resume_line() -> ResumeLine | None:
    """This process's command line, where it sets ``trainer.resume``
    (:func:`take_run_config`)."""
    return _resumed[0] if _resumed else None


def resume_command(choices: dict[str, str | None]) -> ResumeCommand | None:
    """For a command line that resumes, what it changed against the run, given this run's
    config group ``choices`` (Hydra's): a refusal names the group (a resume by folder) or
    the override, and tells to drop one only where the command line gave it
    (seg.engine.resume.refuse_changed_settings). Logs the overrides taken from the run."""
    from seg.engine.resume import ResumeCommand

    line = resume_line()
    if line is None:
        return None
    if line.folder is not None:
        log.info("resuming %s with its own overrides (.hydra/overrides.yaml): %s",
                 line.folder, " ".join(line.taken) or "none")
    return ResumeCommand(line.choices, choices, line.given)
