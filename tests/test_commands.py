"""A user's first minutes with the commands: --help says what each does, seg-eval shows
its progress and where eval.json went, and seg-predict, seg-eval and seg-export leave
nothing in the working folder but what they were asked to write."""

from __future__ import annotations

import ast
import io
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seg.cli.eval import with_progress

SEG = Path(__file__).resolve().parents[1] / "seg"
CONFIGS = SEG.parent / "configs"
# What a command's --help has no use for: each takes from a tenth of a second to seconds.
HEAVY = ("torch", "torchvision", "cv2", "albumentations", "scipy", "tensorboard")


def run_command(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"seg.cli.{name}", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def files_under(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*")
            if not path.is_dir()}


@pytest.fixture
def empty_folder(tmp_path: Path) -> Path:
    """Where the user runs a command: nothing in it."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


# -- --help -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "eval", "predict", "export", "train", "pretrain",
])
def test_help_says_what_the_command_does(name: str, tmp_path: Path) -> None:
    result = run_command(name, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"seg-{name}: ")  # a description first
    assert f"Usage: seg-{name}" in result.stdout
    assert "powered by hydra" not in result.stdout.lower()
    assert "_base" not in result.stdout  # a shared part of the dataset configs, no option
    assert files_under(tmp_path) == set()


def test_pretrain_has_a_help_of_its_own(tmp_path: Path) -> None:
    """seg-pretrain composes seg-train's config, yet its --help says what it does and the
    settings it reads (pretrain.*), not seg-train's."""
    import yaml

    train_help = yaml.safe_load((CONFIGS / "hydra" / "help" / "train.yaml").read_text())
    shown = run_command("pretrain", "--help", cwd=tmp_path).stdout
    assert "pretrain.iterations" in shown and "pretrain.checkpoint_every" in shown
    assert train_help["header"].startswith("seg-train: ")  # what the next line looks for
    assert train_help["header"] not in shown
    # a help override the user gives wins over seg-pretrain's own
    shown = run_command("pretrain", "hydra/help=train", "--help", cwd=tmp_path).stdout
    assert shown.startswith(train_help["header"])


@pytest.mark.parametrize("name", ["train", "eval", "predict", "export", "pretrain"])
def test_entry_points_import_torch_only_when_they_run(name: str) -> None:
    """The module of a command imports nothing heavy at its top (a function that needs
    torch imports it), so that --help is quick."""
    tree = ast.parse((SEG / "cli" / f"{name}.py").read_text())
    top = {alias.name for node in tree.body if isinstance(node, ast.Import)
           for alias in node.names}
    top |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    light = {"__future__", "json", "logging", "os", "sys", "time", "typing", "pathlib",
             "collections.abc", "hydra", "hydra.core.hydra_config", "hydra.utils", "omegaconf",
             "tqdm", "seg.settings", "seg.errors", "seg.text", "seg.clock", "seg.run_lock",
             "seg.cli.command",
             "seg.cli.errors"}
    assert top <= light


@pytest.mark.parametrize("name", ["train", "eval", "predict", "export", "data", "compare",
                                  "pretrain"])
def test_help_loads_no_heavy_library(name: str) -> None:
    """Importing a command's module, all that its --help needs, loads none of them."""
    code = f"import sys, seg.cli.{name}; print(sorted(set({HEAVY}) & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"


# -- what the commands leave behind -------------------------------------------------------


def test_eval_writes_only_its_outputs_and_says_where(checkpoint: Path, shapes_root: Path,
                                                     empty_folder: Path) -> None:
    result = run_command("eval", f"checkpoint={checkpoint}", f"dataset_root={shapes_root}",
                         "device=cpu", cwd=empty_folder)
    assert result.returncode == 0, result.stderr
    files = files_under(empty_folder)
    (written,) = [name for name in files if name.endswith("/eval.json")]
    assert written.startswith("outputs/eval/")
    folder = written.removesuffix("eval.json")
    # eval.json, the confusion matrix (picture, counts) and the 4 val images' panels
    assert files - {written} == {f"{folder}confusion.png", f"{folder}confusion.csv",
                                 *(name for name in files if name.startswith(f"{folder}worst/"))}
    assert len(files) == 3 + 4
    assert result.stdout.strip().splitlines()[-1] == f"wrote {written}"  # the last line
    assert "evaluated 1/1 batches" in result.stdout  # progress, as log lines off a terminal
    assert "mIoU" in result.stdout


def test_eval_writes_into_output_dir(checkpoint: Path, shapes_root: Path,
                                     empty_folder: Path) -> None:
    result = run_command("eval", f"checkpoint={checkpoint}", f"dataset_root={shapes_root}",
                         "device=cpu", "output_dir=results", "progress=false", "worst=0",
                         cwd=empty_folder)
    assert result.returncode == 0, result.stderr
    assert files_under(empty_folder) == {"results/eval.json", "results/confusion.png",
                                         "results/confusion.csv"}
    assert "evaluated" not in result.stdout


def test_predict_writes_only_the_masks(checkpoint: Path, tmp_path: Path,
                                       empty_folder: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(images / "a.png")
    result = run_command("predict", f"checkpoint={checkpoint}", f"input={images}",
                         "output=masks", "device=cpu", cwd=empty_folder)
    assert result.returncode == 0, result.stderr
    assert files_under(empty_folder) == {"masks/a.png", "masks/a_overlay.jpg"}
    assert "predict:" not in result.stderr  # no progress bar drawn into a pipe


def test_export_writes_only_the_file_and_no_warnings(checkpoint: Path,
                                                     empty_folder: Path) -> None:
    result = run_command("export", f"checkpoint={checkpoint}", "output=model.onnx",
                         cwd=empty_folder)
    assert result.returncode == 0, result.stderr
    assert files_under(empty_folder) == {"model.onnx"}
    assert "Warning" not in result.stderr, result.stderr


def test_a_failed_command_leaves_the_folder_as_it_was(empty_folder: Path) -> None:
    result = run_command("eval", "checkpoint=missing.pt", cwd=empty_folder)
    assert result.returncode == 1
    assert result.stderr.startswith("error: checkpoint missing.pt not found")
    assert "Traceback" not in result.stderr
    assert empty_folder.is_dir() and files_under(empty_folder) == set()


# -- seg-eval's progress ------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_eval_progress_is_a_bar_on_a_terminal(monkeypatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(with_progress(range(20), show=True)) == list(range(20))
    assert "eval" in terminal.getvalue() and "20/20" in terminal.getvalue()


def test_eval_progress_elsewhere_is_a_log_line_every_tenth(monkeypatch, caplog) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe, a log file
    with caplog.at_level(logging.INFO, logger="seg.eval"):
        assert list(with_progress(range(20), show=True)) == list(range(20))
    messages = [record.getMessage() for record in caplog.records]
    assert [message.split(",")[0] for message in messages] == [
        f"evaluated {done}/20 batches" for done in range(2, 21, 2)]
    assert "ETA" in messages[0] and messages[-1].endswith(" s")  # the last: elapsed alone


def test_eval_progress_can_be_off() -> None:
    batches = [1, 2, 3]
    assert with_progress(batches, show=False) is batches
