"""Training runs keep what they promised: every rewind keeps every earlier last.pt, a
failed resume leaves .hydra/ as it was however it fails, a skipped step changes nothing
(batch-norm statistics included) and no checkpoint holds a NaN, every setting is checked
before the work, start-up faults (a full disk, SIGTERM, a save cut off by SIGKILL) are
one line or cleaned up, and a FIFO in the run folder never hangs a run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from seg.cli.command import import_user_modules
from seg.cli.errors import root_cause
from seg.engine import load_checkpoint
from seg.engine.checkpoints import Checkpointer, remove_unfinished_saves
from seg.engine.hooks import REGISTERED_HOOKS, Hook, register_hook
from seg.errors import BadValue, NonFiniteLoss, PathExists, UserError
from seg.training import check_callbacks, loss_from_config, model_of, parameter_groups, train

SEG_TRAIN = [sys.executable, "-m", "seg.cli.train"]
TINY = ["debug=tiny", "dataset.crop_size=48"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, shapes_root: Path) -> Path:
    """A debug=tiny run folder made by seg-train (with .hydra/): copied before any change."""
    run = tmp_path_factory.mktemp("engine_safety") / "run"
    subprocess.run([*SEG_TRAIN, *TINY, f"dataset.root={shapes_root}", f"hydra.run.dir={run}"],
                   check=True, capture_output=True, timeout=300)
    return run


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def hydra_files(run: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((run / ".hydra").iterdir())}


def seg_train(*args: str, cwd: Path, code: str = "", **kwargs) -> subprocess.CompletedProcess:
    """seg-train in a fresh process, after ``code`` (a patch) has run in it."""
    script = (f"import sys\n{code}\nfrom seg.cli.train import main\n"
              f"sys.argv = ['seg-train', *{list(args)!r}]\nmain()\n")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=cwd, timeout=300, **kwargs)


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()]


# -- nothing kept is replaced ---------------------------------------------------------------


def test_two_rewinds_to_the_same_iteration_keep_both_earlier_last_checkpoints(
        trained_run: Path, compose_train, tmp_path: Path) -> None:
    run = copy_of(trained_run, tmp_path)
    checkpoints = run / "checkpoints"
    shutil.copy(checkpoints / "best.pt", checkpoints / "start.pt")  # iteration 2
    state = load_checkpoint(checkpoints / "last.pt")
    state["iteration"] = 4  # as after more training
    torch.save(state, checkpoints / "last.pt")
    kept = []
    for _ in range(2):  # the second rewinds from the last.pt the first one trained
        kept.append((checkpoints / "last.pt").read_bytes())
        cfg = compose_train(f"trainer.resume={checkpoints / 'start.pt'}",
                            "trainer.max_iters=4", "trainer.rewind=true")
        assert train(cfg, run)["iterations"] == 4
    assert (checkpoints / "last_iteration_4.pt").read_bytes() == kept[0]
    assert (checkpoints / "last_iteration_4_2.pt").read_bytes() == kept[1]
    with pytest.raises(PathExists, match=r"keeps last\.pt as last_iteration_4_3\.pt; "
                                         "nothing kept is replaced"):
        train(compose_train(f"trainer.resume={checkpoints / 'start.pt'}",
                            "trainer.max_iters=4"), run)


def test_a_checkpoint_kept_aside_never_replaces_one_of_its_name(tmp_path: Path) -> None:
    (tmp_path / "last_iteration_6.pt").write_bytes(b"first rewind's")
    (tmp_path / "last_iteration_6_2.pt").write_bytes(b"second rewind's")
    (tmp_path / "last.pt").write_bytes(b"third rewind's")
    checkpoints = Checkpointer(tmp_path, keep={"last.pt": "last_iteration_6.pt"})
    checkpoints.save("last.pt", lambda: {"iteration": 3})
    checkpoints.save("last.pt", lambda: {"iteration": 4})  # moved aside once only
    assert (tmp_path / "last_iteration_6.pt").read_bytes() == b"first rewind's"
    assert (tmp_path / "last_iteration_6_2.pt").read_bytes() == b"second rewind's"
    assert (tmp_path / "last_iteration_6_3.pt").read_bytes() == b"third rewind's"
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 4


# -- a failed resume leaves .hydra/ as it was -----------------------------------------------

RAISES_IN_STEP = ("import seg.engine.loop as loop\n"
                  "def step(*args, **kwargs):\n    raise {error}\n"
                  "loop.Trainer.train_step = step\n")


@pytest.mark.parametrize("override, code, status", [
    ("scheduler.power=-1", "", 1),  # a user error, once a traceback after a step
    ("loss=ce", RAISES_IN_STEP.format(error="RuntimeError('a bug')"), 1),
    ("loss=ce", RAISES_IN_STEP.format(error="KeyboardInterrupt"), 130),
    ("loss=ce", "import os, signal\nimport seg.training as training\n"
                "training.check_dataset_root = lambda *a: os.kill(os.getpid(), signal.SIGTERM)",
     143),
], ids=["user-error", "bug", "ctrl-c", "sigterm"])
def test_a_resume_failing_in_any_way_leaves_the_hydra_files_as_they_were(
        trained_run: Path, shapes_root: Path, tmp_path: Path, override: str, code: str,
        status: int) -> None:
    run = copy_of(trained_run, tmp_path)
    before = hydra_files(run)
    # a new recipe (more iterations, another loss): Hydra rewrites .hydra/, seg adds
    # config_until_iteration_2.yaml, before the run fails
    done = seg_train(*TINY, f"dataset.root={shapes_root}", f"trainer.resume={run}",
                     "trainer.max_iters=6", override, cwd=tmp_path, code=code)
    assert done.returncode == status, done.stderr
    assert hydra_files(run) == before


# -- a skipped step changes nothing ---------------------------------------------------------


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit, a NaN equal to a NaN where both have one."""
    return torch.equal(a, b) or (a.is_floating_point() and a.shape == b.shape
                                 and torch.equal(a.isnan(), b.isnan())
                                 and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0)))


def states_equal(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all(states_equal(a[k], b[k]) if isinstance(a[k], dict)
               else same(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
               for k in a)


def snapshot(module: object) -> dict:
    return {key: (value.clone() if isinstance(value, torch.Tensor) else value)
            for key, value in module.state_dict().items()}


def optimizer_snapshot(optimizer: torch.optim.Optimizer) -> dict:
    state = optimizer.state_dict()
    return {"state": {index: {key: value.clone() for key, value in values.items()}
                      for index, values in state["state"].items()},
            "groups": [{k: v for k, v in group.items() if k != "params"}
                       for group in state["param_groups"]]}


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_a_nonfinite_step_under_skip_leaves_weights_statistics_and_optimizer_as_they_were(
        compose_train, optimizer: str) -> None:
    cfg = compose_train("trainer.on_nan=skip", f"optimizer={optimizer}")
    trainer = instantiate(cfg.trainer)
    model = model_of(cfg.model, cfg.dataset.num_classes).train()
    assert any("running_mean" in key for key in model.state_dict())  # batch norms to keep
    optim = instantiate(cfg.optimizer)(params=parameter_groups(model, cfg.optimizer.lr, 1.0))
    criterion = loss_from_config(cfg)
    generator = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(2, 3, 48, 48, generator=generator),
             "mask": torch.randint(0, cfg.dataset.num_classes, (2, 48, 48), generator=generator)}
    _, skipped = trainer.train_step(model, optim, batch, 255, criterion)  # a good one first
    assert not skipped
    model_before, optimizer_before = snapshot(model), optimizer_snapshot(optim)
    poisoned = {**batch, "image": torch.full_like(batch["image"], float("nan"))}
    _, skipped = trainer.train_step(model, optim, poisoned, 255, criterion)
    assert skipped
    assert states_equal(snapshot(model), model_before)
    assert states_equal(optimizer_snapshot(optim), optimizer_before)


def test_a_checkpoint_holding_a_nan_is_never_written(tmp_path: Path) -> None:
    checkpoints = Checkpointer(tmp_path)
    checkpoints.save("last.pt", lambda: {"model": {"bn.running_var": torch.ones(3)}})
    good = (tmp_path / "last.pt").read_bytes()
    poisoned = {"model": {"conv.weight": torch.ones(2),
                          "bn.running_var": torch.tensor([1.0, float("nan")])},
                "optimizer": {"state": {}}}
    with pytest.raises(NonFiniteLoss, match=r"refusing to save .*last\.pt: "
                                            r"model\.bn\.running_var holds a NaN") as error:
        checkpoints.save("last.pt", lambda: poisoned)
    assert "\n" not in str(error.value) and "trainer.grad_clip" in str(error.value)
    with pytest.raises(NonFiniteLoss, match=r"optimizer\.state\.0\.exp_avg holds a NaN"):
        checkpoints.save("best.pt", lambda: {"model": {}, "optimizer": {"state": {
            0: {"step": torch.tensor(1.0), "exp_avg": torch.tensor([float("inf")])}}}})
    assert (tmp_path / "last.pt").read_bytes() == good
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.pt"]


# -- every setting checked before the work ---------------------------------------------------


@pytest.mark.parametrize("override, expected", [
    ("seed=-1", r"^seed must be an integer from 0 to 4294967295, got -1$"),
    ("seed=1180591620717411303424", r"^seed must be an integer from 0 to 4294967295"),
    ("trainer.device=meta", r"^trainer\.device='meta' is not a device seg computes on"),
    ("scheduler.power=-1", r"^scheduler\.power must be a number from 0"),
    ("scheduler.warmup_ratio=1.5", r"^scheduler\.warmup_ratio must be a number from 0 to 1"),
    ("dataset.mean=[0,0]", r"^dataset\.mean must be 3 numbers, one per colour channel"),
    ("dataset.std=0", r"^dataset\.std must be 3 positive numbers"),
    ("dataset.std=[0.2,0,0.2]", r"^dataset\.std must be 3 positive numbers"),
    ("+callbacks.x._target_=builtins.print",
     r"^callbacks\.x\._target_='builtins\.print' is not a hook of seg"),
    ("+callbacks.upsampler_kernels.out._target_=builtins.print",
     r"^callbacks\.upsampler_kernels\.out names code to run"),
])
def test_a_bad_setting_is_one_line_before_anything_is_written(
        compose_train, tmp_path: Path, override: str, expected: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    read = []
    monkeypatch.setattr("seg.training.check_dataset_root", lambda *a: read.append(a))
    with pytest.raises(Exception) as raised:  # noqa: PT011 (the cause is checked below)
        train(compose_train(override), tmp_path / "run")
    error = root_cause(raised.value)  # Hydra wraps what a constructor raises (the trainer's)
    assert isinstance(error, UserError) and re.search(expected, str(error)), error
    assert "\n" not in str(error)
    assert not read and not (tmp_path / "run").exists()  # neither the data nor the folder


class OwnHook(Hook):
    def __init__(self, logger: object, model: object) -> None:
        pass


def test_a_hook_registered_by_an_imported_module_may_be_a_callback(compose_train) -> None:
    target = f"{__name__}.OwnHook"
    cfg = compose_train(f"+callbacks.own._target_={target}", "+callbacks.own._partial_=true")
    with pytest.raises(BadValue, match="is not a hook of seg"):
        check_callbacks(cfg.callbacks)
    register_hook(OwnHook)
    try:
        check_callbacks(cfg.callbacks)
    finally:
        REGISTERED_HOOKS.discard(target)


@pytest.mark.parametrize("imports", ["[.foo]", "['']", "foo"])
def test_an_import_that_names_no_module_is_one_line(compose_train, imports: str) -> None:
    with pytest.raises(UserError, match="module name"):
        import_user_modules(compose_train(f"imports={imports}"))


# -- start-up faults ------------------------------------------------------------------------


def limit_file_size(limit: int):
    def limit_in_child() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, as on a full disk
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_in_child


def test_a_full_disk_as_a_new_run_starts_is_one_line_and_leaves_no_folder(
        shapes_root: Path, tmp_path: Path) -> None:
    done = seg_train(*TINY, f"dataset.root={shapes_root}", f"hydra.run.dir={tmp_path}/new",
                     cwd=tmp_path, preexec_fn=limit_file_size(100))  # Hydra's config.yaml
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert error_lines(done) == [f"error: cannot write {tmp_path / 'new'} (File too large; "
                                 + error_lines(done)[0].split("; ", 1)[1]]
    assert not (tmp_path / "new").exists()


def test_a_full_disk_as_a_resume_starts_is_one_line_and_keeps_the_hydra_files(
        trained_run: Path, shapes_root: Path, tmp_path: Path) -> None:
    run = copy_of(trained_run, tmp_path)
    before = hydra_files(run)
    # Hydra's new hydra.yaml, longer by the overrides, fails; the earlier one fits
    limit = max(len(content) for content in before.values()) + 8
    done = seg_train(*TINY, f"dataset.root={shapes_root}", f"trainer.resume={run}",
                     "trainer.max_iters=4", "trainer.progress=false", "trainer.log_every=1",
                     cwd=tmp_path, preexec_fn=limit_file_size(limit))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(error_lines(done)) == 1 and "File too large" in done.stderr
    assert hydra_files(run) == before


def test_sigterm_while_a_run_starts_is_one_line_143_and_leaves_no_folder(
        shapes_root: Path, tmp_path: Path) -> None:
    done = seg_train(*TINY, f"dataset.root={shapes_root}", f"hydra.run.dir={tmp_path}/new",
                     cwd=tmp_path, code="import os, signal\nimport seg.training as training\n"
                     "training.check_dataset_root = lambda *a: os.kill(os.getpid(), "
                     "signal.SIGTERM)")
    assert done.returncode == 143, done.stderr
    assert error_lines(done) == ["stopped by SIGTERM before training started; nothing was "
                                 "written"]
    assert not (tmp_path / "new").exists()


def test_what_a_killed_save_left_is_removed_by_the_next_run_holding_the_lock(
        trained_run: Path, compose_train, tmp_path: Path) -> None:
    run = copy_of(trained_run, tmp_path)
    checkpoints = run / "checkpoints"
    (checkpoints / ".last.pt.k2x_9abc.tmp").write_bytes(b"half a save")
    (tmp_path / "victim").write_bytes(b"keep")
    (checkpoints / ".best.pt.zzzzzzzz.tmp").symlink_to(tmp_path / "victim")  # not seg's
    (checkpoints / ".notes.tmp").write_bytes(b"not seg's either")
    assert train(compose_train(f"trainer.resume={run}", "trainer.max_iters=4"),
                 run)["iterations"] == 4
    assert sorted(path.name for path in checkpoints.iterdir()) == [
        ".best.pt.zzzzzzzz.tmp", ".notes.tmp", "best.pt", "last.pt"]
    assert (tmp_path / "victim").read_bytes() == b"keep"


def test_only_write_files_own_temporary_names_are_removed(tmp_path: Path) -> None:
    names = [".last.pt.abcdefgh.tmp", ".last_iteration_6_2.pt.a1_b2c3d.tmp"]
    for name in [*names, ".last.pt.short.tmp", "last.pt.abcdefgh.tmp", ".last.pt.ABCDEFGH.tmp"]:
        (tmp_path / name).write_bytes(b"")
    assert sorted(path.name for path in remove_unfinished_saves(tmp_path)) == sorted(names)
    assert len(list(tmp_path.iterdir())) == 3


# -- no hangs -------------------------------------------------------------------------------


@contextmanager
def fails_after(seconds: int) -> Iterator[None]:
    """A hang becomes a failure (SIGALRM raises in the main thread)."""

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError(f"still waiting after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_fifo_metrics_json_under_resume_auto_is_one_line_not_a_hang(
        trained_run: Path, compose_train, tmp_path: Path) -> None:
    run = copy_of(trained_run, tmp_path)
    (run / "metrics.json").unlink()
    os.mkfifo(run / "metrics.json")
    with fails_after(60), pytest.raises(PathExists, match=r"metrics\.json is not a plain file"):
        train(compose_train("trainer.resume=auto"), run)


def test_a_damaged_metrics_json_under_resume_auto_resumes(trained_run: Path, compose_train,
                                                          tmp_path: Path) -> None:
    run = copy_of(trained_run, tmp_path)
    (run / "metrics.json").write_text('{"mIoU": 0.5, "hist')
    assert train(compose_train("trainer.resume=auto"), run)["iterations"] == 2
