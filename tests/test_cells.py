"""scripts/make_cells.py: a folder dataset of a kind the study's presets were not sized
for, which the folder reader reads as a user's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_module

from seg.cli.command import CONFIG_MODULE
from seg.data.readers import build_split

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_cells.py"


def make(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args],
                          capture_output=True, text=True, check=False)


def test_cells_is_a_folder_dataset_with_every_class(tmp_path: Path) -> None:
    done = make(tmp_path / "cells", "--train", "6", "--val", "3")
    assert done.returncode == 0, done.stderr
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "dataset=folder", f"dataset.root={tmp_path / 'cells'}"])
    assert list(cfg.dataset.class_names) == ["background", "cell", "nucleus", "fibre"]
    train = build_split(cfg.dataset, "train", None)
    assert len(train) == 6
    labels = set()
    for index in range(len(train)):
        sample = train[index]
        labels |= set(np.unique(np.asarray(sample["mask"])).tolist())
    assert labels <= {0, 1, 2, 3} and {0, 1, 3} <= labels


def test_cells_never_writes_into_an_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "cells").mkdir()
    done = make(tmp_path / "cells")
    assert done.returncode == 2 and "exists: choose a new folder" in done.stderr
    assert not any((tmp_path / "cells").iterdir())


def test_cells_is_the_same_for_the_same_seed(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert make(tmp_path / name, "--train", "2", "--val", "1").returncode == 0
    assert ((tmp_path / "a" / "masks" / "cell_00000.png").read_bytes()
            == (tmp_path / "b" / "masks" / "cell_00000.png").read_bytes())
