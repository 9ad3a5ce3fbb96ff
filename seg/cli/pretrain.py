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

The run folder is locked while it pretrains (seg.run_lock: a second pretraining into it
is one line), and ``pretrain.pt`` in it holds where the pretraining stands, saved every
``pretrain.checkpoint_every`` iterations: the same command started again after a kill
goes on from there. A ``pretrain.pt`` of other settings is refused, never mixed in; a
finished ``encoder.pth`` is never replaced.
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

from seg.cli.common import CONFIG_PATH, exit_on_user_error, hydra_command
from seg.errors import BadValue, MissingSetting, PathExists
from seg.run_lock import run_folder_lock
from seg.settings import check_dataset_root, positive_int
from seg.text import printable

if TYPE_CHECKING:  # torch: imported where it is used, so that --help stays quick
    import torch

    from seg.engine import TrainingState

log = logging.getLogger("seg.pretrain")
ENCODER_FILE = "encoder.pth"  # written last, and whole: there only once pretraining finished
CHECKPOINT_FILE = "pretrain.pt"  # where a pretraining stands, to go on after a kill
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
    refused (it is never replaced). A ``pretrain.pt`` there, left by a pretraining that
    stopped, is continued from its iteration when it was made with the same settings
    (:data:`RECIPE_KEYS`); with others it is refused in one line naming them: delete it
    to start over, since continuing would silently mix two pretrainings."""
    settings = cfg.get("pretrain")
    if settings is None:
        raise MissingSetting("pretrain settings are missing: add compare=default, or "
                             "+pretrain.iterations=N +pretrain.batch_size=B +pretrain.lr=LR")
    every = positive_int(settings.get("checkpoint_every", CHECKPOINT_EVERY),
                         "pretrain.checkpoint_every")
    run_dir = Path(run_dir)
    with run_folder_lock(run_dir):
        encoder = printable(run_dir / ENCODER_FILE)
        if os.path.lexists(run_dir / ENCODER_FILE):
            raise PathExists(f"{encoder} holds a finished pretraining, which is never "
                             f"replaced: load it (model.encoder.weights={encoder}), or "
                             "pretrain into another folder (another hydra.run.dir)")
        return pretrain_locked(cfg, run_dir, every)


def pretrain_locked(cfg: DictConfig, run_dir: Path, checkpoint_every: int) -> Path:
    """:func:`pretrain_encoder`, its folder's lock held."""
    # torch, the datasets and TensorBoard: imported here, so that --help stays quick
    from seg.data.base import IGNORE_INDEX
    from seg.data.loader import build_loader, resolve_num_workers
    from seg.data.readers import training_split
    from seg.engine import seed_everything
    from seg.models import encoder_from_config
    from seg.study.pretrain import NativeStrideClassifier, pretrain
    from seg.training import resolve_crop_size

    settings = cfg.pretrain
    # pretrain.precision: the encoder's own, apart from the study's runs (trainer.precision)
    trainer = instantiate(cfg.trainer, precision=settings.get("precision",
                                                              cfg.trainer.precision))
    seed_everything(cfg.seed, trainer.deterministic)
    data = cfg.dataset
    check_dataset_root(data.root, data.get("setup_command"))
    resolve_crop_size(data)
    workers = resolve_num_workers(data.num_workers, trainer.device.type, data.crop_size)
    loader = build_loader(training_split(data), settings.batch_size, train=True,
                          num_workers=workers, seed=cfg.seed,
                          pin_memory=trainer.device.type == "cuda")
    classifier = NativeStrideClassifier(
        encoder_from_config(OmegaConf.to_container(cfg.model.encoder, resolve=True)),
        data.num_classes)
    optimizer = instantiate(cfg.optimizer, lr=settings.lr)(params=classifier.parameters())
    scheduler = instantiate(cfg.scheduler, total_iters=settings.iterations)(optimizer=optimizer)
    progress = Progress(run_dir / CHECKPOINT_FILE, pretraining_recipe(cfg, trainer),
                        classifier, optimizer, scheduler, trainer.scaler)
    classifier.to(trainer.device, memory_format=trainer.memory_format)  # before its optimizer
    state = progress.restore()
    logger = instantiate(cfg.logger)(log_dir=run_dir / "tb")
    log.info("pretraining %s for %d iterations on %s (precision %s)", cfg.model.encoder.name,
             settings.iterations, trainer.device, trainer.precision)
    try:
        loss = pretrain(trainer, classifier, optimizer, scheduler, loader, settings.iterations,
                        logger, IGNORE_INDEX, state, progress.save, checkpoint_every)
    finally:
        logger.close()
    return write_encoder(run_dir / ENCODER_FILE, classifier.encoder, loss)


def write_encoder(path: Path, encoder: torch.nn.Module, loss: float) -> Path:
    """Write the encoder's weights, keeping any file already at ``path`` (a finished
    pretraining is never replaced)."""
    import torch

    from seg.files import write_file

    write_file(path, lambda file: torch.save(encoder.state_dict(), file), replace=False)
    log.info("pretrained encoder: %s (loss %.4f)", path, loss)
    return path


def pretraining_recipe(cfg: DictConfig, trainer: object) -> dict:
    """What decides the encoder a pretraining makes (:data:`RECIPE_KEYS`, resolved, and
    the precision and clipping its steps run at), as a checkpoint stores it."""
    recipe = {}
    for key in RECIPE_KEYS:
        value = OmegaConf.select(cfg, key)
        recipe[key] = (OmegaConf.to_container(value, resolve=True)
                       if isinstance(value, DictConfig) else value)
    for key in NOT_RECIPE:
        part, name = key.split(".", 1)
        (recipe.get(part) or {}).pop(name, None)
    return {**recipe, "precision": str(trainer.precision), "grad_clip": trainer.grad_clip}


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


class Progress:
    """A pretraining's checkpoint (``pretrain.pt``): the classifier, optimizer, scheduler,
    gradient scaler, position and random state (seg.engine.TrainingState), and the recipe
    that made them, written atomically (seg.engine.save_checkpoint)."""

    def __init__(self, path: Path, recipe: dict, classifier: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler: object, scaler: object) -> None:
        self.path, self.recipe = path, recipe
        self.classifier, self.optimizer = classifier, optimizer
        self.scheduler, self.scaler = scheduler, scaler

    def save(self, state: TrainingState) -> None:
        from seg.engine import save_checkpoint

        save_checkpoint(self.path, {
            "model": self.classifier.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            **state.state_dict(), "recipe": self.recipe})

    def restore(self) -> TrainingState:
        """Where a stopped pretraining of the same recipe stands, its weights and states
        loaded; a fresh start where there is no checkpoint. A checkpoint of another
        recipe is one line naming what differs."""
        from seg.engine import TrainingState, load_checkpoint, load_model_state

        state = TrainingState()
        if not os.path.lexists(self.path):
            return state
        stored = load_checkpoint(self.path)
        changed = changed_settings(stored.get("recipe") or {}, self.recipe)
        if changed:
            raise BadValue(f"{printable(self.path)} holds a pretraining with other settings "
                           f"({printable(', '.join(changed[:4]))}): pretrain with the "
                           "settings it was made with to continue it, or delete it to start "
                           "over")
        load_model_state(self.classifier, stored["model"], self.path)
        self.optimizer.load_state_dict(stored["optimizer"])
        self.scheduler.load_state_dict(stored["scheduler"])
        if self.scaler is not None and stored.get("scaler"):
            self.scaler.load_state_dict(stored["scaler"])
        state.load_state_dict(stored)
        log.info("resumed the pretraining from %s at iteration %d", self.path, state.iteration)
        return state


@hydra_command("train")
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    pretrain_encoder(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
