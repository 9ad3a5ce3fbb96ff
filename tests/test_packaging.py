"""seg as an installed package: the wheel holds the code and the configs (configs/ ships
as seg.configs), and a non-editable install trains from a folder that is not the
repository."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel --no-deps .``, as a user or a CI job builds it."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
                    str(out), str(REPO)], check=True, capture_output=True, timeout=600)
    return next(out.glob("seg-*.whl"))


def test_the_wheel_holds_every_module_and_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(REPO)) for p in (REPO / "seg").rglob("*.py")}
    configs = {"seg/configs/" + str(p.relative_to(REPO / "configs"))
               for p in (REPO / "configs").rglob("*") if p.suffix in (".yaml", ".py")}
    assert "seg/configs/train.yaml" in configs
    assert modules - names == set()
    assert configs - names == set()


@pytest.mark.slow
def test_an_installed_seg_trains_from_an_empty_folder(wheel: Path, shapes_root: Path,
                                                     tmp_path: Path) -> None:
    target, empty = tmp_path / "site", tmp_path / "empty"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(wheel)], check=True, timeout=600)
    empty.mkdir()
    # the installed copy comes first: the editable one of this checkout is not used
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import seg; print(seg.__file__)"],
                           cwd=empty, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(target)
    result = subprocess.run(
        [str(target / "bin" / "seg-train"), "debug=tiny", f"dataset.root={shapes_root}",
         "hydra.run.dir=run", "trainer.progress=false"],
        cwd=empty, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (empty / "run" / "metrics.json").is_file()
    assert (empty / "run" / "checkpoints" / "last.pt").is_file()
