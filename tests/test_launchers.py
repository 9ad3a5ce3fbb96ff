"""Scale-out configs: the SLURM launcher (submitit) and the Optuna searches in hparams_search/."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seg.cli.command import CONFIG_MODULE
from tests.conftest import needs_optuna, needs_submitit

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

SEARCHES = sorted(p.stem for p in (CONFIGS / "hparams_search").glob("*.yaml"))
TINY_RUN = ["debug=tiny", "dataset.crop_size=48"]
# Names, not classes: Hydra's plugin discovery imports the plugins' modules anew.
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def compose_with_hydra(*overrides: str) -> DictConfig:
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


@needs_submitit
def test_slurm_launcher_runs_one_task_per_gpu_and_requeues() -> None:
    cfg = compose_with_hydra("hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4",
                             "hydra.sweep.dir=/sweep")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == SLURM_LAUNCHER
    instantiate(launcher)  # builds without a cluster: submitit looks for SLURM when it submits
    assert launcher.tasks_per_node == 4  # follows gpus_per_node
    assert launcher.partition is None and launcher.nodes == 1
    assert launcher.timeout_min > 0 and launcher.signal_delay_s > 0
    assert launcher.max_num_timeout > 0  # without it a job at its time limit is not requeued
    assert launcher.submitit_folder.startswith("/sweep/")


@needs_optuna
@pytest.mark.parametrize("search", SEARCHES)
def test_search_maximises_miou_over_parameters_that_exist(search: str) -> None:
    from optuna.samplers import TPESampler

    cfg = compose_with_hydra(f"hparams_search={search}")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == OPTUNA_SWEEPER
    instantiate(sweeper)
    assert isinstance(instantiate(sweeper.sampler), TPESampler)
    assert sweeper.direction == "maximize"  # seg-train returns val mIoU
    assert sweeper.study_name and sweeper.n_trials > 0
    assert sweeper.sampler.seed is not None
    overrides = OverridesParser.create().parse_overrides(
        [f"{key}={value}" for key, value in sweeper.params.items()])
    for override in overrides:
        assert override.is_sweep_override(), override.input_line
        key = override.get_key_element()
        if "/" in key:  # a config group: every choice is one of its options
            for option in override.sweep_string_iterator():
                assert (CONFIGS / key / f"{option}.yaml").is_file(), f"{key}={option}"
        else:  # a value: the key exists in the config
            assert OmegaConf.select(cfg, key) is not None, key


def run_sweep(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    # one thread per run: submitit_local starts every run of the sweep at once
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "seg.cli.train", "-m", *overrides],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@needs_submitit
def test_submitit_local_sweep_writes_every_run(tmp_path, shapes_root) -> None:
    sweep = tmp_path / "sweep"
    result = run_sweep(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
                       *TINY_RUN, f"dataset.root={shapes_root}",
                       "model/upsampler=bilinear,transposed", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-2000:]
    for upsampler in ("bilinear", "transposed"):  # folders: <job number>_<what it sets>
        (run,) = sweep.glob(f"*upsampler={upsampler}")
        assert (run / "metrics.json").is_file(), run


@pytest.mark.slow
@needs_optuna
@pytest.mark.parametrize("search", SEARCHES)
def test_optuna_search_writes_the_best_trial(tmp_path, shapes_root, search: str) -> None:
    sweep = tmp_path / "sweep"
    result = run_sweep(tmp_path, f"hparams_search={search}", "hydra.sweeper.n_trials=2",
                       *TINY_RUN, f"dataset.root={shapes_root}", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-2000:]
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert 0.0 <= best.best_value <= 1.0 and best.best_params
    assert len(list(sweep.glob("*/metrics.json"))) == 2
