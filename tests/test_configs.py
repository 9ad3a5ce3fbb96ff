"""Every option of every config group composes and instantiates."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from seg.cli.common import CONFIG_DIR, model_from_config
from tests.layouts import make_layout

GROUPS = ["dataset", "model/encoder", "model/decoder", "model/upsampler", "optimizer",
          "scheduler", "trainer", "logger", "experiment", "debug", "compare",
          "hparams_search"]


def options(group: str) -> list[str]:
    # files starting with "_" are shared parts of a group's options, not options
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("[!_]*.yaml"))


CASES = [(group, option) for group in GROUPS for option in options(group)]


def test_every_group_has_options() -> None:
    assert all(options(group) for group in GROUPS)


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_instantiates(compose_train, tmp_path, group: str, option: str) -> None:
    # a dataset option reads its own layout; the others use the shapes fixture
    layout = make_layout(option, tmp_path / "data") if group == "dataset" else {}
    cfg = compose_train(f"{group}={option}", *(f"{k}={v}" for k, v in layout.items()))
    model = model_from_config(cfg.model, cfg.dataset.num_classes)
    assert len(instantiate(cfg.dataset.train)) > 0 and len(instantiate(cfg.dataset.val)) > 0
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    instantiate(cfg.scheduler)(optimizer=optimizer)
    assert instantiate(cfg.trainer).max_iters > 0
    instantiate(cfg.logger)(log_dir=tmp_path / "tb").close()
