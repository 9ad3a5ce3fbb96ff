"""What only a CUDA GPU can show (marked ``gpu``: skipped without one): bf16 training
steps, the fast kernels' settings, and an NCCL process group evaluating."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seg.engine import Trainer
from seg.training import train

pytestmark = pytest.mark.gpu


def test_a_bf16_step_trains_fp32_weights() -> None:
    trainer = Trainer(device="cuda", precision="bf16")
    model = torch.nn.Conv2d(3, 4, 3, padding=1).to(trainer.device)
    before = model.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = {"image": torch.randn(2, 3, 16, 16), "mask": torch.randint(0, 4, (2, 16, 16))}
    loss, skipped = trainer.train_step(model, optimizer, batch, ignore_index=255)
    assert loss.is_cuda and torch.isfinite(loss) and loss > 0 and not skipped
    assert model.weight.dtype == torch.float32  # autocast computes in bf16, keeps fp32 weights
    assert not torch.equal(model.weight, before)


def test_a_channels_last_run_with_autotuned_kernels(compose_train, tmp_path: Path) -> None:
    cfg = compose_train("trainer.device=cuda", "trainer.channels_last=true",
                        "trainer.max_iters=4", "trainer.eval_every=4")
    metrics = train(cfg, tmp_path)
    assert torch.backends.cudnn.benchmark  # set by the Trainer: not a deterministic run
    assert torch.backends.cuda.matmul.allow_tf32
    assert metrics["iterations"] == 4 and 0 <= metrics["mIoU"] <= 1


def test_one_nccl_process_evaluates_a_checkpoint(compose_train, tmp_path: Path) -> None:
    train(compose_train("trainer.max_iters=2"), tmp_path / "run")
    env = {**os.environ, "NCCL_DEBUG": "INFO"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
         "-m", "seg.cli.eval", f"checkpoint={tmp_path / 'run/checkpoints/last.pt'}",
         "device=cuda", f"output_dir={tmp_path / 'eval'}"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NCCL INFO" in result.stdout + result.stderr  # the group ran on NCCL
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["mIoU"] >= 0
