"""Issue 40: quiet logs and a helpful --help. A sweep's output holds no plugin chatter, no
colour codes and no Joblib.Parallel(...) call; seg-compare --help is plain text that lists
every preset with what it is and costs; seg-train --help shows each setting with the
comment its YAML file gives it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from seg.cli.compare import PRESET_COSTS
from seg.cli.help_text import first_sentence, preset_lines, read_comments
from tests.conftest import needs_optuna

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = sorted(path.stem for path in (CONFIGS / "compare").glob("*.yaml"))
TINY_RUN = ["debug=tiny", "dataset.crop_size=48"]


def run_command(name: str, *args: str, cwd: Path) -> str:
    """What ``seg-NAME ARGS`` prints, stdout and stderr together, as in a log file."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", f"seg.cli.{name}", *args], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


def line_of(text: str, start: str) -> str:
    (line,) = [line for line in text.splitlines() if line.strip().startswith(start)]
    return line


# -- seg-compare --help ----------------------------------------------------------------------


def test_compare_help_lists_every_preset_in_plain_text(tmp_path: Path) -> None:
    shown = run_command("compare", "--help", cwd=tmp_path)
    assert "``" not in shown
    for preset in PRESETS:
        header, _ = read_comments((CONFIGS / "compare" / f"{preset}.yaml").read_text())
        entry = line_of(shown, f"compare={preset} ")
        assert first_sentence(header)[:40] in entry  # what it is: its header's first words
    costs = [line.strip() for line in shown.splitlines() if line.strip().startswith("cost")]
    assert len(costs) == len(PRESETS)  # one cost for each
    assert "cost: 2 min 18 s to 3 min 15 s on the idle 2-core" in shown  # quick's, measured
    # each example on a line of its own, not run together into one paragraph
    assert re.search(r"^  seg-compare compare=quick +# ", shown, re.MULTILINE)
    assert re.search(r"^  seg-compare --aggregate outputs/compare/quick +# ", shown, re.MULTILINE)


def test_costs_name_only_presets_that_exist() -> None:
    assert set(PRESET_COSTS) <= set(PRESETS)
    assert all(cost.startswith(("cost: ", "cost not measured")) for cost in PRESET_COSTS.values())


def test_a_new_preset_is_listed_without_editing_the_help(tmp_path: Path) -> None:
    (tmp_path / "night.yaml").write_text(
        "# @package _global_\n# An overnight study (`seg-compare compare=night`): every\n"
        "# upsampler, 5 seeds. Sized for 8 hours.\ndefaults:\n  - default\n")
    (tmp_path / "quick.yaml").write_text("# A pipeline check.\ntrainer:\n  max_iters: 3\n")
    lines = preset_lines(tmp_path, {"quick": "cost: 2 min"})
    assert lines == [
        "  compare=night  An overnight study",  # up to its first colon, no aside
        "                 cost not measured",
        "  compare=quick  A pipeline check",
        "                 cost: 2 min",
    ]


# -- seg-train --help ------------------------------------------------------------------------


def test_train_help_shows_each_key_with_its_comment(tmp_path: Path) -> None:
    shown = run_command("train", "--help", cwd=tmp_path)
    trainer = (CONFIGS / "trainer" / "default.yaml").read_text()
    beside = re.search(r"^precision: auto +# (.*)$", trainer, re.MULTILINE)[1]
    assert beside[:60] in line_of(shown, "trainer.precision=auto ")
    assert "CUDA (with gradient" in line_of(shown, "trainer.precision=auto ")  # its next line
    # a comment above its key, in each of the main groups
    assert "# a validation every 200" in line_of(shown, "trainer.eval_every=200 ")
    assert "# a tenth of the run" in line_of(shown, "scheduler.warmup_iters=auto ")
    assert "# One kernel for every parameter" in line_of(shown, "optimizer.fused=true ")
    assert "# a bad sample stops the run" in line_of(shown, "dataset.on_error=raise ")
    # a group's heading: the option chosen and its file's header comment
    assert line_of(shown, "optimizer=adamw ").startswith("optimizer=adamw  # AdamW: ")
    # an interpolation is shown as written: Hydra's template would take $... for its own
    assert line_of(shown, "scheduler.total_iters=").strip() == (
        "scheduler.total_iters=${trainer.max_iters}")
    assert max(map(len, shown.splitlines()[-60:])) < 160  # one line per key, comments cut


def test_a_key_set_without_comment_keeps_none_of_the_value_it_replaced(tmp_path: Path) -> None:
    """debug=tiny sets trainer.max_iters=2 without a comment: the default's comment, about
    make train's 1,600, would describe a value that is not there."""
    shown = run_command("train", "debug=tiny", "--help", cwd=tmp_path)
    assert line_of(shown, "trainer.max_iters=").strip() == "trainer.max_iters=2"


def test_comments_are_read_beside_above_and_under_their_keys() -> None:
    text = """# @package _global_
# What this file is.
# Still the header.
top: 1  # beside
# above the mapping
group:
  # above a nested key
  nested: x  # and beside it
    # going on under it

  bare: 2
  help: |
    text: not a key # nor a comment
after: "a # in quotes"  # the real one
"""
    header, comments = read_comments(text, "pkg")
    assert header == "What this file is. Still the header."
    assert comments == {
        "pkg.top": "beside", "pkg.group": "above the mapping",
        "pkg.group.nested": "above a nested key and beside it going on under it",
        "pkg.group.bare": "", "pkg.group.help": "", "pkg.after": "the real one"}


# -- quiet sweeps ----------------------------------------------------------------------------


@pytest.mark.slow  # a whole (tiny) sweep: `make test-all`
@needs_optuna
def test_optuna_sweep_log_has_no_colour_codes_nor_plugin_chatter(tmp_path: Path,
                                                                  shapes_root: Path) -> None:
    sweep = tmp_path / "sweep"
    log = run_command("train", "-m", "hparams_search=upsampling_lr", "hydra.sweeper.n_trials=1",
                      *TINY_RUN, f"dataset.root={shapes_root}", f"hydra.sweep.dir={sweep}",
                      cwd=tmp_path)
    (run_log,) = sweep.glob("*/train.log")
    for text in (log, run_log.read_text()):
        assert "\x1b[" not in text
        assert "setup plugin" not in text
    # Optuna's own line is still there, as one of Hydra's
    assert re.search(r"\]\[HYDRA\] A new study created in memory with name: upsampling_lr$",
                     log, re.MULTILINE)


@pytest.mark.slow  # a whole (tiny) sweep: `make test-all`
def test_joblib_sweep_says_in_one_short_line_what_it_launches(tmp_path: Path,
                                                              shapes_root: Path) -> None:
    sweep = tmp_path / "sweep"
    log = run_command("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1",
                      "seed=0", *TINY_RUN, f"dataset.root={shapes_root}",
                      f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert "Joblib.Parallel(" not in log
    assert "[HYDRA] joblib: launching 1 run, 1 at a time" in log
    assert len(list(sweep.glob("*/metrics.json"))) == 1  # and it ran
