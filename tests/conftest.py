"""Shared fixtures: a tiny generated dataset and Hydra composition of train.yaml; markers
for tests that need what a machine may lack (CUDA, an optional Hydra plugin)."""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from seg.cli.command import CONFIG_MODULE
from seg.data.cpus import available_cpus
from seg.data.synthetic.shapes import generate_shapes


def share_the_cores() -> None:
    """Under pytest-xdist, each worker (and every command it starts) gets its share of the
    cores' threads: with each taking them all, two workers' thread pools wait for each
    other and a training in one runs up to ten times slower while the other works."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, available_cpus() // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the commands tests start
        torch.set_num_threads(threads)


share_the_cores()


# the extras of pyproject.toml (make install puts them in; a GPU machine's own Python may not)
def installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package (hydra_plugins) is missing too
        return False


needs_optuna = pytest.mark.skipif(not installed("hydra_plugins.hydra_optuna_sweeper"),
                                  reason="the optuna extra (hydra-optuna-sweeper) is missing")
needs_submitit = pytest.mark.skipif(not installed("hydra_plugins.hydra_submitit_launcher"),
                                    reason="the slurm extra (hydra-submitit-launcher) is missing")


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny shapes dataset in VOC layout: 8 train and 4 val images of 64x64."""
    return generate_shapes(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=4,
                           image_size=64, seed=0)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, shapes_root: Path) -> Path:
    """A model trained with debug=tiny on the tiny dataset: its best.pt (read, never written)."""
    from seg.training import train

    run = tmp_path_factory.mktemp("trained")
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "debug=tiny", f"dataset.root={shapes_root}", "dataset.crop_size=48"])
    train(cfg, run)
    return run / "checkpoints" / "best.pt"


@pytest.fixture
def compose_train(shapes_root: Path) -> Callable[..., DictConfig]:
    """Compose train.yaml with debug=tiny on the tiny dataset, plus extra overrides."""

    def compose_with(*overrides: str) -> DictConfig:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(
                config_name="train",
                overrides=["debug=tiny", f"dataset.root={shapes_root}",
                           "dataset.crop_size=48", *overrides],
            )

    return compose_with


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip where no CUDA GPU is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
