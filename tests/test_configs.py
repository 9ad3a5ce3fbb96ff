"""Every option of every config group composes and instantiates."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from seg.cli.common import CONFIG_DIR, model_from_config

GROUPS = ["dataset", "model/encoder", "model/decoder", "model/upsampler", "optimizer",
          "scheduler", "trainer", "logger", "experiment", "debug", "compare"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


CASES = [(group, option) for group in GROUPS for option in options(group)]


def test_every_group_has_options() -> None:
    assert all(options(group) for group in GROUPS)


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_instantiates(compose_train, tmp_path, group: str, option: str) -> None:
    cfg = compose_train(f"{group}={option}")
    model = model_from_config(cfg.model, cfg.dataset.num_classes)
    assert len(instantiate(cfg.dataset.train)) > 0 and len(instantiate(cfg.dataset.val)) > 0
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    instantiate(cfg.scheduler)(optimizer=optimizer)
    assert instantiate(cfg.trainer).max_iters > 0
    instantiate(cfg.logger)(log_dir=tmp_path / "tb").close()
