"""Slow tests of scaling out and of surviving kills, with real processes: torchrun with the
gloo backend on CPU, SIGKILL mid-epoch then resume, torch.compile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seg.data.synthetic.shapes import generate_shapes
from seg.engine import load_checkpoint
from seg.training import train

pytestmark = pytest.mark.slow
TIMING_KEYS = {"wall_s", "train_images_per_s", "inference_ms_per_image"}
# one thread per process: two processes share this machine's cores
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", *args]


def run(command: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def five_val(tmp_path_factory) -> Path:
    """An odd number of val images, so that two processes get shards of different sizes."""
    return generate_shapes(tmp_path_factory.mktemp("shapes5"), num_train=8, num_val=5,
                           image_size=64, seed=1)


def test_two_gloo_processes_evaluate_a_checkpoint_as_one(compose_train, five_val,
                                                         tmp_path: Path) -> None:
    train(compose_train(f"dataset.root={five_val}", "trainer.max_iters=4"), tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    matrices = []
    for name, launcher in (("single", [sys.executable, "-m"]), ("gloo", torchrun("-m"))):
        run([*launcher, "seg.cli.eval", f"checkpoint={checkpoint}", "device=cpu",
             "batch_size=1", f"output_dir={tmp_path / name}"])
        matrices.append(json.loads((tmp_path / name / "eval.json").read_text())
                        ["confusion_matrix"])
    assert matrices[0] == matrices[1]
    assert sum(map(sum, matrices[0])) == 5 * 64 * 64  # every val pixel, counted once


@pytest.mark.parametrize("model", [
    (), *((f"model/decoder={decoder}", "model/upsampler=fade")
          for decoder in ("unet", "fpn", "deeplabv3plus", "segformer"))],
    ids=["fcn4s", "unet", "fpn", "deeplabv3plus", "segformer"])
def test_torchrun_trains_with_two_processes_and_one_writer(model: tuple[str, ...], shapes_root,
                                                           tmp_path: Path) -> None:
    """Every decoder under DistributedDataParallel, which needs each parameter used."""
    run(torchrun("-m", "seg.cli.train", "debug=tiny", f"dataset.root={shapes_root}",
                 "dataset.crop_size=48", "trainer.max_iters=4", "trainer.sync_bn=true",
                 *model, f"hydra.run.dir={tmp_path}"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["iterations"] == 4
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["iteration"] == 4


def untimed(metrics: dict) -> dict:
    """The metrics without their timings, in the run's evaluation history too."""
    kept = {key: value for key, value in metrics.items() if key not in TIMING_KEYS}
    kept["history"] = [untimed(entry) for entry in metrics.get("history", [])]
    return kept


def scalar_steps(tb_dir: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb_dir))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def test_a_run_killed_mid_epoch_resumes_bit_for_bit(shapes_root, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "seg.cli.train", "debug=tiny", f"dataset.root={shapes_root}",
               "dataset.crop_size=48", "trainer.deterministic=true", "trainer.max_iters=40",
               "trainer.eval_every=40", "trainer.checkpoint_every=5", "trainer.log_every=1"]
    run([*command, f"hydra.run.dir={tmp_path / 'whole'}"])

    killed = tmp_path / "killed"
    process = subprocess.Popen([*command, f"hydra.run.dir={killed}"], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = load_checkpoint(last)
    assert saved["iteration"] < 40 and saved["epoch_batches"] % 4 != 0  # mid-epoch (4 a lap)

    run([*command, "trainer.resume=auto", f"hydra.run.dir={killed}"])
    whole, resumed = (json.loads((tmp_path / run_dir / "metrics.json").read_text())
                      for run_dir in ("whole", "killed"))
    assert untimed(resumed) == untimed(whole)
    weights = [load_checkpoint(tmp_path / d / "checkpoints" / "last.pt")["model"]
               for d in ("whole", "killed")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    # TensorBoard: what the killed run logged after its checkpoint is purged, not doubled
    assert scalar_steps(killed / "tb", "train/loss") == list(range(1, 41))


def test_compiled_training(compose_train, tmp_path: Path) -> None:
    metrics = train(compose_train("trainer.compile=true"), tmp_path)
    assert metrics["iterations"] == 2 and 0.0 <= metrics["mIoU"] <= 1.0
