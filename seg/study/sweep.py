"""Running the study's sweep: one encoder pretrained (seg-pretrain), then a Hydra
multirun of seg-train whose runs all start from it, each in a subprocess, then the
bilinear baseline of each decoder again at a longer budget (the convergence rule). The
commands are the command line's (seg-compare hands them over as :class:`StudyCommands`):
the study names none.

The same command finds the same sweep folder (named after its overrides) and picks up
where it stopped: the encoder is not pretrained again, every run resumes from its own
last checkpoint (``trainer.resume=auto``), and a run that finished is left as it is
(seg.training.finished_metrics). The study's running time adds up over those starts
(seg.study.progress.RunningTime). The pretraining runs here; the sweeps' runs go through
the launcher the overrides choose (``hydra/launcher=slurm``: submitit).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from seg.study.progress import RunningTime, SweepProgress
from seg.study.runs import ENCODER_DIR, LONGER_DIR

SWEEP_ROOT = Path("outputs/compare")
# how the runs are launched, not what they compute: the same study here or on SLURM is
# one sweep folder, and the pretraining always runs here
LAUNCHER_KEYS = ("hydra/launcher", "hydra.launcher.")
# what the longer baseline sweep sets itself
NOT_FOR_LONGER = ("model/upsampler", "model/decoder", "seed", "trainer.max_iters",
                  "hydra.sweep.dir")
READABLE = 60  # characters of the overrides in a sweep folder's name


@dataclass(frozen=True)
class StudyCommands:
    """The commands the study starts, each a command line to which it adds overrides:
    ``train`` runs seg-train (the sweeps, with ``--multirun``), ``pretrain`` seg-pretrain
    (the shared encoder)."""

    train: list[str]
    pretrain: list[str]


def run_study(overrides: Sequence[str], commands: StudyCommands) -> tuple[Path, int]:
    """Pretrain the shared encoder, run the study's sweep (``compare=default`` unless the
    overrides choose another), then its longer baseline runs; return the sweep folder and
    the exit status. Run again, the same command resumes the same folder. ``commands``
    start the pretraining and the sweeps.

    An override of ``model.encoder.weights``, or ``pretrain.iterations: 0`` (a preset
    whose encoder comes pretrained: compare=imagenet), skips the pretraining: runs start
    from the configured weights (``null``: from scratch, each with its seed's encoder).
    """
    overrides = list(overrides)
    if setting(overrides, "compare") is None:
        overrides.insert(0, "compare=default")
    sweep_dir = setting(overrides, "hydra.sweep.dir")
    if sweep_dir is None:
        sweep_dir = str(SWEEP_ROOT / folder_name(overrides))
        overrides.append(f"hydra.sweep.dir={sweep_dir}")
    print(f"sweep folder: {sweep_dir} (the same command again resumes it: finished runs "
          "are kept, the others go on from their last checkpoint)", flush=True)
    if setting(overrides, "trainer.resume") is None:
        overrides.append("trainer.resume=auto")
    with RunningTime(Path(sweep_dir)) as clock:
        status = run_parts(overrides, sweep_dir, commands)
    print(f"running time of the study: {clock.summary()}", flush=True)
    return Path(sweep_dir), status


def run_parts(overrides: list[str], sweep_dir: str, commands: StudyCommands) -> int:
    """The study's parts in turn: the shared encoder's pretraining (where the study has
    one), the sweep, the longer baselines; the exit status of the first that fails."""
    if setting(overrides, "model.encoder.weights") is None and pretrains(overrides):
        encoder, status = pretrained_encoder(overrides, Path(sweep_dir), commands.pretrain)
        if status:
            return status
        overrides.append(f"model.encoder.weights={encoder}")
    status = multirun(commands.train, overrides)
    longer = longer_baseline_overrides(overrides, sweep_dir) if status == 0 else None
    if longer is not None:
        status = multirun(commands.train, longer)
    return status


def key_of(override: str) -> str:
    """The key or group an override sets (``+seed=1``, ``~seed``: ``seed``)."""
    return override.split("=", 1)[0].lstrip("+~")


def setting(overrides: Sequence[str], key: str) -> str | None:
    """The value the overrides give ``key`` (the last one wins, as in Hydra), or None."""
    values = [o.split("=", 1)[1] for o in overrides if "=" in o and key_of(o) == key]
    return values[-1] if values else None


def shared_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that hold for every run: neither sweeps nor Hydra's own settings."""
    return [o.input_line for o in OverridesParser.create().parse_overrides(list(overrides))
            if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]


def folder_name(overrides: Sequence[str]) -> str:
    """The sweep folder of a command: the preset (``compare=quick``: ``quick``), then the
    other overrides made readable (``seed=0,1``: ``seed-0-1``), and a hash of them, so
    that cleaning and shortening never give two commands one folder. The launcher's
    overrides are left out."""
    preset = setting(overrides, "compare") or "default"
    rest = [o for o in overrides
            if key_of(o) != "compare" and not key_of(o).startswith(LAUNCHER_KEYS)]
    if not rest:
        return preset
    # letters, digits and _.+- only: the folder is passed on in overrides (hydra.sweep.dir,
    # model.encoder.weights), where "=" and "," are Hydra's own
    parts = [re.sub(r"[^\w.+-]+", "-", part, flags=re.ASCII) for part in [preset, *rest]]
    digest = hashlib.sha256("\n".join([preset, *rest]).encode()).hexdigest()[:8]
    return f"{'_'.join(parts)[:READABLE].rstrip('-_')}-{digest}"


def pretrained_encoder(overrides: Sequence[str], sweep_dir: Path, pretrain: Sequence[str]
                       ) -> tuple[Path, int]:
    """The shared encoder's weights, pretrained once by the command ``pretrain`` (here,
    whatever the launcher) with the overrides that are not swept (seed 0); returns
    ``(path, exit status)``. A sweep folder that has them keeps them: seg-pretrain writes
    encoder.pth last, and whole (seg.files.write_file), so the file is there only once
    pretraining finished."""
    encoder_dir = sweep_dir / ENCODER_DIR
    encoder = encoder_dir / "encoder.pth"
    if encoder.is_file():
        print(f"pretrained encoder: {encoder}, from an earlier start of this sweep", flush=True)
        return encoder, 0
    shared = [o for o in shared_overrides(overrides) if key_of(o) != "trainer.resume"]
    # one process alone: every free core (the sweep's runs share them, trainer.threads)
    command = [*pretrain, *shared, "trainer.threads=auto", f"hydra.run.dir={encoder_dir}"]
    return encoder, subprocess.run(command, check=False).returncode


def pretrains(overrides: Sequence[str]) -> bool:
    """Whether the study pretrains its shared encoder: ``pretrain.iterations`` above 0."""
    settings = composed(overrides).get("pretrain") or {}
    return int(settings.get("iterations", 0)) > 0


def multirun(train: Sequence[str], overrides: Sequence[str]) -> int:
    """Run the command ``train`` (seg-train) as a Hydra multirun of ``overrides``, saying
    as its runs finish how many of how many are done and when the rest should be (see
    :class:`SweepProgress`); return its exit status."""
    command = [*train, "--multirun", *overrides]
    sweep_dir = setting(overrides, "hydra.sweep.dir")
    if sweep_dir is None:
        return subprocess.run(command, check=False).returncode
    with SweepProgress(Path(sweep_dir), sweep_size(overrides)):
        return subprocess.run(command, check=False).returncode


def sweep_size(overrides: Sequence[str]) -> int:
    """How many runs the multirun of ``overrides`` makes: the product of each swept key's
    values, the command line's over the preset's ``hydra.sweeper.params``."""
    preset = OmegaConf.select(composed(overrides), "hydra.sweeper.params", default=None) or {}
    by_key = {key: f"{key}={values}" for key, values in preset.items()}
    by_key.update({key_of(override): override for override in overrides})
    size = 1
    for parsed in OverridesParser.create().parse_overrides(list(by_key.values())):
        if parsed.is_sweep_override():
            size *= len(list(parsed.sweep_string_iterator()))
    return size


def longer_baseline_overrides(overrides: Sequence[str], sweep_dir: str) -> list[str] | None:
    """The sweep of the bilinear baseline of every decoder the study ran, for the seeds
    ``study.longer_baseline_seeds``, at ``study.longer_baseline_factor`` times its budget,
    into the sweep folder's :data:`LONGER_DIR`; None when it has no seeds. The study's
    other overrides hold (a command line's beat ``hydra.sweeper.params``)."""
    cfg = composed(overrides)
    study = cfg.get("study") or {}
    seeds = ",".join(str(seed) for seed in study.get("longer_baseline_seeds", [0]))
    if not seeds:
        return None
    budget = int(study.get("longer_baseline_factor", 2)) * int(cfg.trainer.max_iters)
    kept = [o for o in overrides if key_of(o) not in NOT_FOR_LONGER]
    # they run after the sweep, often fewer than its runs at a time: each may take the
    # cores the others leave (a preset's one thread per run would leave a core idle).
    # Joblib's launcher sets OMP_NUM_THREADS in its workers, which auto then obeys.
    threads = [] if setting(overrides, "trainer.threads") else ["trainer.threads=auto"]
    return [*kept, "model/upsampler=bilinear", f"model/decoder={decoders(overrides, cfg)}",
            f"seed={seeds}", f"trainer.max_iters={budget}", *threads,
            f"hydra.sweep.dir={Path(sweep_dir) / LONGER_DIR}"]


def composed(overrides: Sequence[str]) -> DictConfig:
    """The study's config with its overrides that hold for every run, Hydra's included."""
    from hydra import compose, initialize_config_module

    # the configs as installed (seg.cli.command.CONFIG_MODULE; the study never imports cli)
    with initialize_config_module(config_module="seg.configs", version_base="1.3"):
        return compose(config_name="train", overrides=shared_overrides(overrides),
                       return_hydra_config=True)


def decoders(overrides: Sequence[str], cfg: DictConfig) -> str:
    """The decoders the study's sweep ran: the command line's ``model/decoder``, else its
    preset's ``hydra.sweeper.params``, else the config's one."""
    given = setting(overrides, "model/decoder")
    swept = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    return given or swept.get("model/decoder") or cfg.hydra.runtime.choices["model/decoder"]
