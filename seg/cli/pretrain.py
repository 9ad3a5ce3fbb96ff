"""``seg-pretrain`` (``python -m seg.cli.pretrain``): train an encoder alone, for the
upsampling study.

It composes the same config as ``seg-train`` (``configs/train.yaml``) and reads
``pretrain.iterations``, ``pretrain.batch_size``, ``pretrain.lr`` and, optionally,
``pretrain.precision`` (else ``trainer.precision``), which ``compare=default`` sets.
The encoder learns per-pixel classes at each of its taps' own strides (the labels are
brought down by nearest neighbour), so no upsampler takes part.
It writes ``encoder.pth`` into its run folder, which ``model.encoder.weights=PATH``
loads: ``seg-compare`` starts every run of the study from it, as FCN started from
ImageNet weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seg.cli.common import CONFIG_PATH, exit_on_user_error, hydra_command
from seg.errors import MissingSetting
from seg.settings import check_dataset_root

log = logging.getLogger("seg.pretrain")


def pretrain_encoder(cfg: DictConfig, run_dir: str | Path) -> Path:
    """Pretrain ``cfg.model.encoder`` on the train split; return the ``encoder.pth`` path."""
    # torch, the datasets and TensorBoard: imported here, so that --help stays quick
    from seg.data.base import IGNORE_INDEX
    from seg.data.loader import build_loader, resolve_num_workers
    from seg.data.readers import training_split
    from seg.engine import save_checkpoint, seed_everything
    from seg.models import encoder_from_config
    from seg.study.pretrain import NativeStrideClassifier, pretrain
    from seg.training import resolve_crop_size

    settings = cfg.get("pretrain")
    if settings is None:
        raise MissingSetting("pretrain settings are missing: add compare=default, or "
                             "+pretrain.iterations=N +pretrain.batch_size=B +pretrain.lr=LR")
    run_dir = Path(run_dir)
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
    logger = instantiate(cfg.logger)(log_dir=run_dir / "tb")
    log.info("pretraining %s for %d iterations on %s (precision %s)", cfg.model.encoder.name,
             settings.iterations, trainer.device, trainer.precision)
    try:
        loss = pretrain(trainer, classifier, optimizer, scheduler, loader, settings.iterations,
                        logger, IGNORE_INDEX)
    finally:
        logger.close()
    path = run_dir / "encoder.pth"
    save_checkpoint(path, classifier.encoder.state_dict())
    log.info("pretrained encoder: %s (loss %.4f)", path, loss)
    return path


@hydra_command("train")
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    pretrain_encoder(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
