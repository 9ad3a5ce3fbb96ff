"""Every option of every config group composes and instantiates."""

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from seg.data.readers import training_split, validation_split
from seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from seg.training import model_of
from tests.conftest import needs_optuna
from tests.layouts import make_layout

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

GROUPS = ["dataset", "model/encoder", "model/decoder", "model/upsampler", "optimizer",
          "scheduler", "trainer", "logger", "experiment", "debug", "compare",
          "hparams_search", "loss"]


def options(group: str) -> list[str]:
    # files starting with "_" are shared parts of a group's options, not options
    return sorted(p.stem for p in (CONFIGS / group).glob("[!_]*.yaml"))


# hparams_search options compose the optuna sweeper: only where that extra is installed
CASES = [pytest.param(group, option, id=f"{group}={option}",
                      marks=[needs_optuna] if group == "hparams_search" else [])
         for group in GROUPS for option in options(group)]


def test_every_group_has_options() -> None:
    assert all(options(group) for group in GROUPS)


@pytest.mark.parametrize(("group", "option"), CASES)
def test_option_instantiates(compose_train, tmp_path, group: str, option: str) -> None:
    # a dataset option reads its own layout; the others use the shapes fixture
    layout = make_layout(option, tmp_path / "data") if group == "dataset" else {}
    cfg = compose_train(f"{group}={option}", *(f"{k}={v}" for k, v in layout.items()))
    stand_in_for_missing_weights(cfg.model.encoder, tmp_path)
    model = model_of(cfg.model, cfg.dataset.num_classes)
    assert len(training_split(cfg.dataset)) > 0 and len(validation_split(cfg.dataset)) > 0
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    instantiate(cfg.scheduler)(optimizer=optimizer)
    assert instantiate(cfg.trainer).max_iters > 0
    instantiate(cfg.logger)(log_dir=tmp_path / "tb").close()


def stand_in_for_missing_weights(encoder_cfg, tmp_path: Path) -> None:
    """Points a timm encoder's weights file, when a fresh clone has not converted it yet,
    at a random state dict of the same model: loading then still checks every key and shape."""
    weights = encoder_cfg.get("weights")
    if encoder_cfg.name != "timm" or weights in (None, "imagenet") or Path(weights).is_file():
        return
    import timm
    import torch

    stand_in = tmp_path / Path(weights).name
    torch.save(timm.create_model(encoder_cfg.model_name).state_dict(), stand_in)
    encoder_cfg.weights = str(stand_in)


def test_imagenet_statistics_are_the_transforms_own(compose_train) -> None:
    # the numbers live in seg/data/transforms.py; what checkpoints store holds them
    cfg = compose_train()
    stored = OmegaConf.to_container(cfg, resolve=True)["dataset"]
    assert stored["mean"] == list(IMAGENET_MEAN) and stored["std"] == list(IMAGENET_STD)
    OmegaConf.resolve(cfg)  # as --cfg job --resolve does
    assert list(cfg.dataset.std) == list(IMAGENET_STD)


def test_ignore_index_is_not_a_setting(compose_train) -> None:
    assert "ignore_index" not in compose_train().dataset


def test_transposed_frozen_is_transposed_without_learning(compose_train) -> None:
    transposed = compose_train("model/upsampler=transposed").model.upsampler
    frozen = compose_train("model/upsampler=transposed_frozen").model.upsampler
    assert frozen.learnable is False
    assert {**frozen, "learnable": True} == {**transposed}
