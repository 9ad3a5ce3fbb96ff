"""Each control of the study is declared once (seg.study.controls), and every upsampler a
configs/compare preset sweeps is read against one."""

from __future__ import annotations

from importlib.resources import files

import pytest
from hydra import compose, initialize_config_module

from seg.study.controls import CONTROLS, FIXED_ALTERNATIVES
from seg.study.stats import FIXED

PRESETS = sorted(path.name.removesuffix(".yaml")
                 for path in (files("seg.configs") / "compare").iterdir()
                 if path.name.endswith(".yaml"))


def swept_upsamplers(preset: str) -> set[str]:
    """The upsamplers ``compare=preset`` sweeps, as Hydra composes it (presets build on
    each other)."""
    with initialize_config_module(config_module="seg.configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"compare={preset}"],
                      return_hydra_config=True)
    return set(str(cfg.hydra.sweeper.params["model/upsampler"]).split(","))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda name: f"compare-{name}")
def test_every_upsampler_a_preset_sweeps_has_its_control(preset: str) -> None:
    swept = swept_upsamplers(preset)
    paired = {name for control in CONTROLS if {control.upsampler, control.control} <= swept
              for name in (control.upsampler, control.control)}
    unread = swept - {FIXED} - FIXED_ALTERNATIVES - paired
    assert unread == set(), "swept with no control to read it against"


def test_a_control_is_declared_once_with_every_reading() -> None:
    pairs = [(control.upsampler, control.control) for control in CONTROLS]
    assert len(pairs) == len(set(pairs))
    for control in CONTROLS:
        for significance in (1, -1, 0):
            text = control.reading(significance).format(u="U", c="C", d="1.00 points")
            assert "U" in text and "C" in text


def test_a_sweep_without_a_declared_pair_is_caught() -> None:
    """The check above fails for an upsampler swept without its control."""
    swept = {"bilinear", "dysample"}
    paired = {name for control in CONTROLS if {control.upsampler, control.control} <= swept
              for name in (control.upsampler, control.control)}
    assert swept - {FIXED} - paired == {"dysample"}
