"""What goes wrong before a run starts is one line naming the file or the setting and the
fix, exit status 1 (130 for a Ctrl-C), and no run folder left behind: a bad classes.yaml,
an unset environment variable, a deleted or unknown setting, a run folder that cannot be
made, test-time scales out of range, a sweep's truncated metrics.json. Text from data
(class names) reaches terminals and logs escaped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seg.data.readers.folder import read_classes
from seg.engine.metrics import format_table
from seg.errors import BadValue
from seg.text import printable
from seg.trained.inference import Inference

FAKE = "\x1b[2J\nINFO fake"  # clears the screen, then fakes a log line


def classes_file(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text(text)
    return root


def alias_bomb(levels: int) -> str:
    """A "billion laughs": each level's list holds nine aliases of the one below."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join([*lines, f"classes: [{{name: *a{levels - 1}}}]"]) + "\n"


def seg_command(name: str, *args: str, cwd: Path, code: str = ""
                ) -> subprocess.CompletedProcess:
    """``seg-NAME ARGS`` in a fresh process, after ``code`` (a patch) has run in it."""
    script = f"import sys\n{code}\nfrom seg.cli.{name} import main\nsys.argv = ['seg-{name}', " \
             f"*{list(args)!r}]\nmain()\n"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()]


# -- classes.yaml ---------------------------------------------------------------------------


@pytest.mark.parametrize("content, expected", [
    ("classes: [{name: a, color: [0, 0, 0]}, {name: b, color: [300, 0, 0]}]",
     "classes[1].color: expected [r, g, b] with 0-255 each, got [300, 0, 0]"),
    ("classes: [{name: a, color: [0, 0, 0]}, {name: b, color: [255, 0]}]",
     "classes[1].color: expected [r, g, b] with 0-255 each, got [255, 0]"),
    ("classes: [{name: a, color: [0, 0, 0]}]\nignore_color: white",
     "ignore_color: expected [r, g, b] with 0-255 each, got 'white'"),
    ("classes: [{name: a, color: [1, 2, 3]}, {name: b, color: [1, 2, 3]}]",
     "classes[1].color [1, 2, 3] is also classes[0].color"),
    ("classes: [{name: a, color: [1, 2, 3]}]\nignore_color: [1, 2, 3]",
     "ignore_color [1, 2, 3] is also classes[0].color"),
    ("classes: [{name: a}, {name: a}]", "class 'a' is listed twice"),
    ("classes: [{name: a}, {name: ''}]", "classes[1].name: expected a text of 1 to 100"),
    (f"classes: [{{name: {'x' * 101}}}]", "classes[0].name: expected a text of 1 to 100"),
    ('classes: [{name: a}, {name: "\\e[2J\\nINFO fake"}]',
     r"classes[1].name '\x1b[2J\nINFO fake' holds characters that do not print"),
    ("classes: [\n  - {name: a\n", "not valid YAML (line 2, column 3"),
])
def test_classes_yaml_is_checked_with_the_key_named(tmp_path: Path, content: str,
                                                     expected: str) -> None:
    root = classes_file(tmp_path / "data", content)
    with pytest.raises(BadValue) as raised:
        read_classes(root)
    message = str(raised.value)
    assert message.startswith(f"{root / 'classes.yaml'}: ") and expected in message
    assert "\n" not in message and "\x1b" not in message


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    """Expanded, the name would take millions of characters (one more level: hundreds of
    megabytes, the issue's MemoryError); aliases are refused before anything expands."""
    root = classes_file(tmp_path / "data", alias_bomb(levels=6))
    start = time.perf_counter()
    with pytest.raises(BadValue, match=r"classes.yaml: not valid YAML \(line 2, column \d+: "
                                       r"aliases \(\*name\) are not accepted"):
        read_classes(root)
    assert time.perf_counter() - start < 1


# -- text from data -------------------------------------------------------------------------


def test_printable_escapes_what_a_terminal_would_obey() -> None:
    assert printable(FAKE) == "\\x1b[2J\\nINFO fake"
    assert printable("a\u202eb\x9bc\x7f\td\r") == "a\\u202eb\\x9bc\\x7f\\td\\r"
    assert printable("café 日本 road-sign") == "café 日本 road-sign"


def test_the_metrics_table_escapes_class_names() -> None:
    metrics = {"per_class_iou": [0.5, 0.25], "per_class_acc": [0.5, 0.5], "mIoU": 0.375}
    table = format_table(metrics, ["background", FAKE])
    assert "\x1b" not in table and "\nINFO fake" not in table
    assert "\\x1b[2J\\nINFO fake" in table


def test_seg_train_logs_class_names_escaped(compose_train, tmp_path: Path, caplog) -> None:
    from seg.training import train

    cfg = compose_train()
    cfg.dataset.class_names = [FAKE, *cfg.dataset.class_names[1:]]
    with caplog.at_level("INFO"):
        train(cfg, tmp_path / "run")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "final val metrics" in logged and "\\x1b[2J\\nINFO fake" in logged
    assert "\x1b" not in logged and "\nINFO fake" not in logged


@pytest.mark.slow  # seconds; the unit tests above cover it
def test_seg_eval_prints_a_checkpoints_class_names_escaped(checkpoint: Path, shapes_root: Path,
                                                           tmp_path: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)
    state["class_names"] = [FAKE, *state["class_names"][1:]]
    torch.save(state, tmp_path / "crafted.pt")
    done = seg_command("eval", f"checkpoint={tmp_path / 'crafted.pt'}",
                       f"dataset_root={shapes_root}", f"output_dir={tmp_path / 'eval'}",
                       "progress=false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\\x1b[2J\\nINFO fake" in done.stdout
    assert "\x1b" not in done.stdout + done.stderr
    assert "\nINFO fake" not in done.stdout + done.stderr


# -- seg-train's start-up -------------------------------------------------------------------


@pytest.fixture
def bad_classes_root(tmp_path: Path) -> Path:
    root = tmp_path / "folder"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    return classes_file(root, "classes: [\n  - {name: a\n")


@pytest.mark.parametrize("overrides, expected", [
    (["dataset=folder", "dataset.root={bad_classes}"],
     "{bad_classes}/classes.yaml: not valid YAML (line 2, column 3"),
    # a seg-train each (seconds): the fast suite keeps two, `make test-all` runs them all
    pytest.param(["dataset.root=${oc.env:SEG_NO_SUCH_VARIABLE}"],
                 "dataset.root: the environment variable SEG_NO_SUCH_VARIABLE is not set: "
                 "export", marks=pytest.mark.slow),
    pytest.param(["~trainer"], "the override ~trainer deleted it: drop ~trainer",
                 marks=pytest.mark.slow),
    (["+trainer.foo=1"], "trainer.foo is not a setting of trainer (seg.engine.loop.Trainer): "
                         "remove +trainer.foo=1; its settings are max_iters, "),
    pytest.param(["+model.encoder.foo=1"], "model.encoder.foo is not an option of the "
                 "simple encoder: use weights, stem_width, widths, depths",
                 marks=pytest.mark.slow),
])
def test_a_start_up_error_is_one_line_and_leaves_no_run_folder(
        overrides: list[str], expected: str, shapes_root: Path, bad_classes_root: Path,
        tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    given = [o.replace("{bad_classes}", str(bad_classes_root)) for o in overrides]
    done = seg_command("train", "debug=tiny", f"dataset.root={shapes_root}", *given,
                       f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 1
    assert error_lines(done) == [error_lines(done)[0]], done.stderr
    assert expected.replace("{bad_classes}", str(bad_classes_root)) in done.stderr
    assert not run_dir.exists()


@pytest.mark.parametrize("run_dir, expected", [
    ("{tmp}/a_file", "hydra.run.dir={tmp}/a_file: {tmp}/a_file is not a folder"),
    ("{tmp}/a_file/run", "hydra.run.dir={tmp}/a_file/run: {tmp}/a_file is not a folder"),
    pytest.param("/proc/seg-run", "hydra.run.dir=/proc/seg-run: cannot make a folder in /proc",
                 marks=pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc")),
])
def test_a_run_folder_that_cannot_be_made_is_one_line(run_dir: str, expected: str,
                                                      tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    done = seg_command("train", "debug=tiny", f"hydra.run.dir={run_dir.format(tmp=tmp_path)}",
                       cwd=tmp_path)
    lines = error_lines(done)
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {expected.format(tmp=tmp_path)}")
    assert "hydra.run.dir" in lines[0].rsplit(": ", 1)[1]  # the fix: another one
    assert (tmp_path / "a_file").read_text() == "not a folder"


# A real SIGINT, sent by the process to itself at a known point of its start-up: in the
# task (Hydra made the run folder), and before Hydra started (while checking the folder).
# Ctrl-C as a terminal delivers it: a shell that starts jobs in the background (CI's may)
# has them ignore SIGINT, and Python then installs no KeyboardInterrupt handler.
CTRL_C = "import os, signal, time\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
INTERRUPTS = {
    "in the task": CTRL_C + "import seg.training as training\n"
                   "training.train = lambda cfg, run_dir, **given: "
                   "(os.kill(os.getpid(), signal.SIGINT), time.sleep(30))",
    "before Hydra": CTRL_C + "import seg.cli.command as command\n"
                    "command.check_run_dir = lambda cfg: (os.kill(os.getpid(), signal.SIGINT),"
                    " time.sleep(30))",
}


@pytest.mark.parametrize("where", INTERRUPTS)
def test_ctrl_c_at_start_up_is_one_line_and_leaves_no_run_folder(
        where: str, shapes_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = seg_command("train", "debug=tiny", f"dataset.root={shapes_root}",
                       f"hydra.run.dir={run_dir}", cwd=tmp_path, code=INTERRUPTS[where])
    assert done.returncode == 130, done.stderr
    assert error_lines(done) == ["interrupted before training started; nothing was written"]
    assert not run_dir.exists()


# -- seg-predict, seg-eval, seg-compare -----------------------------------------------------


@pytest.mark.parametrize("scales", [[0.0001, 50], [1.0, 5.0], [0.1]])
def test_test_time_scales_out_of_range_are_named(scales: object) -> None:
    with pytest.raises(BadValue, match=r"inference.scales=.*: give one or more factors from "
                                       r"0.25 to 4"):
        Inference(scales=scales)
    Inference(scales=[0.25, 1.0, 4])  # the bounds themselves are fine


@pytest.mark.slow  # seconds; the unit tests above cover it
def test_seg_predict_names_test_time_scales_out_of_range(checkpoint: Path,
                                                         tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "image.png")
    done = seg_command("predict", f"checkpoint={checkpoint}", f"input={tmp_path / 'image.png'}",
                       f"output={tmp_path / 'masks'}", "inference=multiscale",
                       "inference.scales=[0.0001,50]", cwd=tmp_path)
    assert done.returncode == 1
    assert error_lines(done) == ["error: inference.scales=[0.0001, 50]: give one or more "
                                 "factors from 0.25 to 4, e.g. [0.75, 1.0, 1.25]"]
    assert not (tmp_path / "masks").exists()


def test_compare_names_a_truncated_metrics_json(tmp_path: Path, capsys) -> None:
    from seg.cli.compare import main

    run = tmp_path / "sweep" / "0_seed=0"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run / "metrics.json").write_text(json.dumps({"mIoU": 0.5, "history": []})[:12])
    with pytest.raises(SystemExit) as exit_info:
        main(["--aggregate", str(tmp_path / "sweep")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {run / 'metrics.json'}: not valid JSON (")
    assert len(err.splitlines()) == 1
    assert err.endswith("rerun that run, or delete the file to list the run as failed")


def test_no_write_test_folder_is_left(tmp_path: Path) -> None:
    """The run folder's check (a folder made and removed where Hydra will make the run's)
    leaves nothing behind."""
    from hydra import compose, initialize_config_module

    from seg.cli.command import CONFIG_MODULE, check_run_dir

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("train", [f"hydra.run.dir={tmp_path}/new/run"], return_hydra_config=True)
    check_run_dir(cfg)
    assert os.listdir(tmp_path) == []
