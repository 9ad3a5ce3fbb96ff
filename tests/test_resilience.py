"""Never lose a run: exact resume after a stop signal, atomic checkpoints, NaN handling,
checkpoints of another model; precision and the samplers behind exact resume."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

from seg.cli.command import exit_on_user_error
from seg.data.decoding import SampleError
from seg.data.sampler import ShardSampler, TrainSampler
from seg.engine import (
    RunInfo,
    RunParts,
    Trainer,
    TrainingInterrupted,
    load_checkpoint,
    load_model_state,
    resolve_precision,
    save_checkpoint,
)
from seg.engine.tensorboard import TensorBoardLogger
from seg.training import train

TIMING_KEYS = {"wall_s", "train_images_per_s", "inference_ms_per_image"}
SHORT_RUN = ["trainer.deterministic=true", "trainer.max_iters=6", "trainer.eval_every=6",
             "trainer.checkpoint_every=2", "trainer.log_every=1"]


class SignalAtStep(TensorBoardLogger):
    """Sends this process ``signum`` once step ``step`` has been logged, as `kill` would."""

    def __init__(self, log_dir: Path, step: int, signum: int = signal.SIGTERM,
                 **options) -> None:
        super().__init__(log_dir, **options)
        self.step, self.signum = step, signum

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        super().log_scalars(values, step)
        if step == self.step and "train/loss" in values:
            os.kill(os.getpid(), self.signum)


def without_timings(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def comparable(metrics: dict) -> dict:
    """The metrics without timings, those of the history's evaluations too."""
    return {**without_timings(metrics),
            "history": [without_timings(entry) for entry in metrics.get("history", [])]}


@pytest.mark.parametrize("signum", [signal.SIGTERM,
                                    pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_a_stopped_run_resumes_exactly(compose_train, tmp_path: Path, signum: int) -> None:
    full = train(compose_train(*SHORT_RUN), tmp_path / "full")

    stopping = compose_train(*SHORT_RUN, "logger._target_=tests.test_resilience.SignalAtStep",
                             "+logger.step=3", f"+logger.signum={int(signum)}")
    with pytest.raises(TrainingInterrupted, match="at iteration 3"):
        train(stopping, tmp_path / "cut")
    saved = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert (saved["iteration"], saved["epoch"], saved["epoch_batches"]) == (3, 0, 3)
    assert signal.getsignal(signum) is not None  # the handlers were put back

    resumed = train(compose_train(*SHORT_RUN, "trainer.resume=auto"), tmp_path / "cut")
    assert comparable(resumed) == comparable(full)
    weights = [load_checkpoint(tmp_path / run / "checkpoints" / "last.pt")["model"]
               for run in ("full", "cut")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_stop_is_one_line_and_the_signal_exit_code(tmp_path: Path, capsys) -> None:
    @exit_on_user_error
    def stopped() -> None:
        raise TrainingInterrupted(signal.SIGTERM, 7, tmp_path / "run" / "checkpoints" / "last.pt")

    with pytest.raises(SystemExit) as exit_info:
        stopped()
    assert exit_info.value.code == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("stopped: stopped by SIGTERM at iteration 7") and "resume=auto" in err


def test_resume_auto_starts_fresh_without_a_checkpoint(tmp_path: Path) -> None:
    assert Trainer(resume="auto", device="cpu").resume_state(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="trainer.resume: no checkpoint"):
        Trainer(resume=True, device="cpu").resume_state(tmp_path)


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"iteration": 1, "weights": torch.ones(3)})

    def dies_half_way(state: dict, file) -> None:
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt  # as a kill during the write

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"iteration": 2})
    assert load_checkpoint(path)["iteration"] == 1


def test_an_unreadable_checkpoint_is_named(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"checkpoint {path} cannot be read"):
        load_checkpoint(path)


def test_a_checkpoint_of_another_model_names_the_keys() -> None:
    saved = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1)).state_dict()
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 1))
    with pytest.raises(ValueError) as raised:
        load_model_state(other, saved, "run/checkpoints/last.pt")
    message = str(raised.value)
    assert "run/checkpoints/last.pt was saved by another model configuration" in message
    assert "missing: 3.bias, 3.weight" in message
    assert "0.weight (4, 3, 3, 3) vs (8, 3, 3, 3)" in message


def test_a_run_folder_that_holds_a_run_is_never_replaced(compose_train, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(compose_train(), run)
    kept = {path: path.read_bytes() for path in
            [*run.glob("checkpoints/*.pt"), run / "metrics.json", *run.glob("tb/*")]}
    other_run = tmp_path / "other.pt"  # another run's checkpoint
    other_run.write_bytes((run / "checkpoints" / "last.pt").read_bytes())
    for resume in ("false", str(other_run)):
        with pytest.raises(FileExistsError, match=f"run folder {run} already holds a run"):
            train(compose_train(f"trainer.resume={resume}"), run)
    assert {path: path.read_bytes() for path in kept} == kept
    assert sorted(run.glob("tb/*")) == sorted(p for p in kept if p.parent.name == "tb")
    metrics = train(compose_train("trainer.resume=auto", "trainer.max_iters=3"), run)
    assert metrics["iterations"] == 3  # continuing the run in its own folder is allowed


def test_resume_auto_restarts_a_run_killed_before_its_first_checkpoint(
        compose_train, tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path / "tb")  # all that such a run leaves
    logger.log_scalars({"train/loss": 1.0}, 1)
    logger.close()
    metrics = train(compose_train("trainer.resume=auto"), tmp_path)
    assert metrics["iterations"] == 2


class FailsFirstEvaluation:
    """``Evaluator.__call__`` that raises as a bad val image would, the first time only."""

    def __init__(self, evaluate) -> None:
        self.evaluate, self.failed = evaluate, False

    def __call__(self, *args, **kwargs):
        if not self.failed:
            self.failed = True
            raise SampleError("val/broken.jpg: cannot decode image")
        return self.evaluate(*args, **kwargs)


def test_a_failed_evaluation_loses_nothing_trained(compose_train, tmp_path: Path,
                                                   monkeypatch) -> None:
    run = [*SHORT_RUN, "trainer.eval_every=3"]
    full = train(compose_train(*run), tmp_path / "full")

    from seg.engine import Evaluator

    failing = FailsFirstEvaluation(Evaluator.__call__)
    monkeypatch.setattr(Evaluator, "__call__", lambda *args: failing(*args))
    with pytest.raises(SampleError):
        train(compose_train(*run), tmp_path / "cut")
    saved = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert saved["iteration"] == 3 and saved["pending_evaluation"]

    resumed = train(compose_train(*run, "trainer.resume=auto"), tmp_path / "cut")
    assert comparable(resumed) == comparable(full)  # evaluated at 3, then went on exactly
    assert (tmp_path / "cut" / "checkpoints" / "best.pt").is_file()


def test_a_bad_val_image_stops_the_run_before_training(compose_train, shapes_root: Path,
                                                       tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    val_id = (root / "ImageSets/Segmentation/val.txt").read_text().split()[-1]
    (root / "JPEGImages" / f"{val_id}.jpg").write_bytes(b"")
    with pytest.raises(SampleError, match=f"{val_id}.jpg"):
        train(compose_train(f"dataset.root={root}"), tmp_path / "run")
    assert not (tmp_path / "run" / "tb").exists()  # no training step was taken


# -- NaN losses ---------------------------------------------------------------------------


class Pixels(torch.utils.data.Dataset):
    """Random 8x8 images; sample ``poisoned`` is NaN, so its batch's loss is NaN."""

    def __init__(self, poisoned: int) -> None:
        self.poisoned = poisoned

    def __len__(self) -> int:
        return 8

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        image = torch.full((3, 8, 8), float("nan")) if index == self.poisoned else \
            torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(index))
        return {"image": image, "mask": torch.zeros(8, 8, dtype=torch.long), "id": str(index)}


def fit_on_pixels(tmp_path: Path, on_nan: str) -> dict:
    from seg.data.loader import build_loader

    model = nn.Conv2d(3, 2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    trainer = Trainer(max_iters=8, eval_every=8, checkpoint_every=1, device="cpu",
                      progress=False, on_nan=on_nan, channels_last=False)
    train_loader = build_loader(Pixels(poisoned=5), 1, train=True)
    val_loader = build_loader(Pixels(poisoned=-1), 2, train=False)
    info = RunInfo(class_names=["a", "b"], palette=[[0, 0, 0], [255, 0, 0]], mean=[0.0] * 3,
                   std=[1.0] * 3)
    logger = TensorBoardLogger(tmp_path / "tb")
    try:
        return trainer.fit(RunParts(model, optimizer, scheduler, train_loader, val_loader, info,
                                    logger=logger), tmp_path)
    finally:
        logger.close()


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError,
                       match=r"loss is not finite at iteration (\d+); the last good"):
        fit_on_pixels(tmp_path, "stop")
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert all(torch.isfinite(w).all() for w in state["model"].values())


def test_on_nan_skip_leaves_the_batch_out(tmp_path: Path) -> None:
    metrics = fit_on_pixels(tmp_path, "skip")
    assert metrics["iterations"] == 8 and metrics["nonfinite_losses"] == 1
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert all(torch.isfinite(w).all() for w in state["model"].values())


# -- precision and samplers ---------------------------------------------------------------


def test_precision_choices(monkeypatch) -> None:
    cpu = torch.device("cpu")
    assert resolve_precision(32, cpu) == "32" and resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr("seg.engine.precision.cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "32"
    monkeypatch.setattr("seg.engine.precision.cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    with pytest.raises(ValueError, match="trainer.precision=16 needs CUDA"):
        resolve_precision(16, cpu)
    with pytest.raises(ValueError, match="use one of 32, bf16, 16, auto"):
        resolve_precision("fp8", cpu)


def test_a_bf16_run_trains(compose_train, tmp_path: Path) -> None:
    metrics = train(compose_train("trainer.precision=bf16"), tmp_path)
    assert metrics["iterations"] == 2 and 0.0 <= metrics["mIoU"] <= 1.0


def test_train_sampler_shards_and_resumes() -> None:
    shards = [TrainSampler(10, seed=3, rank=rank, world_size=3) for rank in range(3)]
    for shard in shards:
        shard.set_epoch(2)
    indices = [[index for index, _ in shard] for shard in shards]
    assert all(len(i) == 3 for i in indices) and len(set(sum(indices, []))) == 9
    whole = list(shards[1])
    shards[1].set_epoch(2, start=1)
    assert list(shards[1]) == whole[1:] and len(shards[1]) == 2
    other_epoch = TrainSampler(10, seed=3)
    other_epoch.set_epoch(3)
    same_epoch = TrainSampler(10, seed=3)
    same_epoch.set_epoch(3)
    assert list(other_epoch) == list(same_epoch)
    same_epoch.set_epoch(4)
    assert list(other_epoch) != list(same_epoch)


def test_shard_sampler_covers_every_index_once() -> None:
    shards = [list(ShardSampler(11, rank, 4)) for rank in range(4)]
    assert sorted(sum(shards, [])) == list(range(11))


def test_an_option_added_since_the_checkpoint_does_not_block_its_resume() -> None:
    from seg.engine.resume import changed_settings

    stored = {"model": {"encoder": {"name": "timm", "model_name": "m"}}}
    now = {"model": {"encoder": {"name": "timm", "model_name": "m", "finest_stride": 4},
                     "final_upsampler": None}}
    assert changed_settings(stored, now) == []
    now["model"]["encoder"]["model_name"] = "other"
    assert changed_settings(stored, now) == [("model.encoder.model_name", "m", "other")]
