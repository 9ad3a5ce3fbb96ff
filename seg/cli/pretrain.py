"""``seg-pretrain`` (``python -m seg.cli.pretrain``): train an encoder alone, for the
upsampling study.

It composes the same config as ``seg-train`` (``configs/train.yaml``) and reads
``pretrain.iterations``, ``pretrain.batch_size``, ``pretrain.lr`` and, optionally,
``pretrain.precision`` (else ``trainer.precision``) and ``pretrain.checkpoint_every``,
which ``compare=default`` sets.
The encoder learns per-pixel classes at each of its taps' own strides (the labels are
brought down by nearest neighbour), so no upsampler takes part.
It writes ``encoder.pth`` into its run folder, which ``model.encoder.weights=PATH``
loads: ``seg-compare`` starts every run of the study from it, as FCN started from
ImageNet weights.

A pretraining is a run (``Trainer.fit``, without val data): its folder is locked while
it trains (a second pretraining into it is one line), ``checkpoints/last.pt`` holds where
it stands, saved every ``pretrain.checkpoint_every`` iterations and on a stop signal, and
the same command started again after a kill goes on from there. A checkpoint of other
settings is refused, never mixed in; a finished ``encoder.pth`` is never replaced.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seg.cli.command import CONFIG_PATH, exit_on_user_error, hydra_command
from seg.errors import BadValue, MissingSetting, PathExists
from seg.run_lock import run_folder_lock
from seg.settings import positive_int
from seg.text import printable

if TYPE_CHECKING:  # torch: imported where it is used, so that --help stays quick
    import torch

    from seg.engine import RunParts, Trainer

log = logging.getLogger("seg.pretrain")
ENCODER_FILE = "encoder.pth"  # written last, and whole: there only once pretraining finished
CHECKPOINT_EVERY = 500  # iterations, unless pretrain.checkpoint_every says otherwise
# what decides the encoder a pretraining makes: a checkpoint made with other values of
# these is never continued (``pretrain.checkpoint_every`` and the loader's workers only
# decide how it gets there)
RECIPE_KEYS = ("pretrain", "model.encoder", "dataset", "optimizer", "scheduler", "seed")
NOT_RECIPE = ("pretrain.checkpoint_every", "scheduler.total_iters", "dataset.num_workers",
              "dataset.cache", "dataset.cache_budget_mb")


def pretrain_encoder(cfg: DictConfig, run_dir: str | Path) -> Path:
    """Pretrain ``cfg.model.encoder`` on the train split into ``run_dir``; return the
    ``encoder.pth`` path. Holds the run folder's lock throughout (another process holding
    it: :class:`PathExists`, naming it). A folder holding a finished ``encoder.pth`` is
    refused (it is never replaced). A checkpoint there, left by a pretraining that
    stopped, is continued from its iteration when it was made with the same settings
    (:data:`RECIPE_KEYS`); with others it is refused in one line naming them: delete it
    to start over, since continuing would silently mix two pretrainings."""
    settings = cfg.get("pretrain")
    if settings is None:
        raise MissingSetting("pretrain settings are missing: add compare=default, or "
                             "+pretrain.iterations=N +pretrain.batch_size=B +pretrain.lr=LR")
    run_dir = Path(run_dir)
    with run_folder_lock(run_dir):
        encoder = printable(run_dir / ENCODER_FILE)
        if os.path.lexists(run_dir / ENCODER_FILE):
            raise PathExists(f"{encoder} holds a finished pretraining, which is never "
                             f"replaced: load it (model.encoder.weights={encoder}), or "
                             "pretrain into another folder (another hydra.run.dir)")
        return pretrain_locked(cfg, run_dir)


def pretraining_trainer(cfg: DictConfig) -> Trainer:
    """``cfg.trainer`` as a pretraining runs it: ``pretrain.iterations`` long, at
    ``pretrain.precision`` (the encoder's own, apart from the study's runs), saving every
    ``pretrain.checkpoint_every`` iterations and going on from its folder's last.pt."""
    settings = cfg.pretrain
    iterations = positive_int(settings.iterations, "pretrain.iterations")
    every = positive_int(settings.get("checkpoint_every", CHECKPOINT_EVERY),
                         "pretrain.checkpoint_every")
    return instantiate(cfg.trainer, precision=settings.get("precision", cfg.trainer.precision),
                       max_iters=iterations, eval_every=iterations, checkpoint_every=every,
                       resume="auto", rewind=False)


def pretrain_locked(cfg: DictConfig, run_dir: Path) -> Path:
    """:func:`pretrain_encoder`, its folder's lock held."""
    # torch, the datasets and TensorBoard: imported here, so that --help stays quick
    from seg.engine import TrainingInterrupted
    from seg.engine.checkpoints import remove_unfinished_saves
    from seg.study.pretrain import PretrainingStopped

    trainer = pretraining_trainer(cfg)
    remove_unfinished_saves(run_dir / "checkpoints")
    recipe = pretraining_recipe(cfg, trainer)
    resume_from = trainer.resume_state(run_dir)
    if resume_from is not None:
        refuse_other_recipe(resume_from, recipe)
    parts = pretraining_run(cfg, run_dir, trainer, recipe, resume_from)
    log.info("pretraining %s for %d iterations on %s (precision %s)", cfg.model.encoder.name,
             trainer.max_iters, trainer.device, trainer.precision)
    try:
        trainer.fit(parts, run_dir, resume_from)
    except TrainingInterrupted as stopped:
        raise PretrainingStopped(stopped.signum, stopped.iteration) from None
    finally:
        parts.logger.close()
    return write_encoder(run_dir / ENCODER_FILE, parts.model.encoder)


def pretraining_run(cfg: DictConfig, run_dir: Path, trainer: Trainer, recipe: dict,
                    resume_from: dict | None) -> RunParts:
    """The pretraining's parts: seeded, the train split's loader in ``pretrain.batch_size``
    batches, the encoder with a classifier on each tap, its optimizer and schedule, and
    its checkpoints carrying ``recipe`` as their config."""
    from seg.data.labels import IGNORE_INDEX
    from seg.data.palette import resolve_palette
    from seg.engine import RunInfo, seed_everything
    from seg.engine.distributed import ProcessGroup
    from seg.models import encoder_from_config
    from seg.models.normalise import Normalise
    from seg.study.pretrain import NativeStrideClassifier, pretraining_parts
    from seg.training import open_logger, training_loader

    settings, data = cfg.pretrain, cfg.dataset
    seed_everything(cfg.seed, trainer.deterministic)
    loader = training_loader(cfg, trainer.device, ProcessGroup(), settings.batch_size)
    classifier = NativeStrideClassifier(
        encoder_from_config(OmegaConf.to_container(cfg.model.encoder, resolve=True)),
        data.num_classes, Normalise(list(data.mean), list(data.std)))
    optimizer = instantiate(cfg.optimizer, lr=settings.lr)(params=classifier.parameters())
    scheduler = instantiate(cfg.scheduler, total_iters=trainer.max_iters)(optimizer=optimizer)
    info = RunInfo(class_names=list(data.class_names),
                   palette=resolve_palette(data.palette, data.num_classes),
                   mean=list(data.mean), std=list(data.std), config=recipe,
                   ignore_index=IGNORE_INDEX)
    logger = open_logger(cfg, run_dir, "auto", resume_from, is_main=True)
    return pretraining_parts(classifier, optimizer, scheduler, loader, info, logger)


def write_encoder(path: Path, encoder: torch.nn.Module) -> Path:
    """Write the encoder's weights, keeping any file already at ``path`` (a finished
    pretraining is never replaced)."""
    import torch

    from seg.files import write_file

    write_file(path, lambda file: torch.save(encoder.state_dict(), file), replace=False)
    log.info("pretrained encoder: %s", path)
    return path


def pretraining_recipe(cfg: DictConfig, trainer: Trainer) -> dict:
    """What decides the encoder a pretraining makes (:data:`RECIPE_KEYS`, resolved, and
    the precision and clipping its steps run at), as its checkpoints store it."""
    recipe = {}
    for key in RECIPE_KEYS:
        value = OmegaConf.select(cfg, key)
        recipe[key] = (OmegaConf.to_container(value, resolve=True)
                       if isinstance(value, DictConfig) else value)
    for key in NOT_RECIPE:
        part, name = key.split(".", 1)
        (recipe.get(part) or {}).pop(name, None)
    return {**recipe, "precision": str(trainer.precision), "grad_clip": trainer.grad_clip}


def refuse_other_recipe(checkpoint: dict, recipe: dict) -> None:
    """A stopped pretraining is continued only with the settings that made it: one line
    naming those that differ (``pretrain.lr``, ``seed``) and the file."""
    changed = changed_settings(checkpoint.get("config") or {}, recipe)
    if changed:
        raise BadValue(f"{printable(checkpoint['path'])} holds a pretraining with other "
                       f"settings ({printable(', '.join(changed[:4]))}): pretrain with the "
                       "settings it was made with to continue it, or delete it to start over")


def changed_settings(stored: dict, recipe: dict) -> list[str]:
    """The settings (``pretrain.lr``, ``seed``) whose values differ between two recipes."""
    changed = []
    for key in sorted(set(stored) | set(recipe)):
        before, now = stored.get(key), recipe.get(key)
        if isinstance(before, dict) and isinstance(now, dict):
            changed += [f"{key}.{name}" for name in sorted(set(before) | set(now), key=str)
                        if before.get(name) != now.get(name)]
        elif before != now:
            changed.append(key)
    return changed


@hydra_command("train", help_config="pretrain")  # train's config, its own --help
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    pretrain_encoder(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
