"""Evaluation hands its collectives tensors on the evaluation device: NCCL refuses CPU
tensors, and gloo on the CPU cannot tell. A spy in place of ``torch.distributed.all_reduce``
checks every tensor handed to it. Without CUDA the evaluation runs on the meta device: a
device other than the CPU that every machine has (tensors with shapes but no values)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from seg.engine import evaluate
from seg.models import build_encoder, build_model, build_upsampler
from seg.models.decoder import FCNDecoder

DEVICES = ["meta", pytest.param("cuda", marks=pytest.mark.gpu)]


class CollectiveReached(Exception):
    """Ends a meta evaluation at its collective: meta tensors hold no values to go on with."""


@pytest.fixture
def two_processes(monkeypatch) -> list[torch.Tensor]:
    """Pretend to be one of two processes; return what was handed to ``all_reduce``."""
    handed: list[torch.Tensor] = []

    def all_reduce(tensor: torch.Tensor, op=None, group=None, async_op=False) -> None:
        handed.append(tensor)
        if tensor.device.type == "meta":
            raise CollectiveReached
        tensor.mul_(2)  # the other process counted the same

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    return handed


@pytest.mark.parametrize("device", DEVICES)
def test_evaluation_reduces_once_on_the_models_device(device: str, two_processes) -> None:
    torch.manual_seed(0)
    encoder = build_encoder("simple", stem_width=8, widths=[8, 8, 8, 8])
    model = build_model(encoder, FCNDecoder, 3, lambda **kw: build_upsampler("transposed", **kw))
    model.to(device)
    items = [{"image": torch.randn(3, 32, 32), "mask": torch.randint(0, 3, (32, 32)),
              "id": str(i)} for i in range(4)]
    model_device = next(model.parameters()).device
    try:
        metrics, _ = evaluate(model, DataLoader(items, batch_size=2), 3, model_device)
    except CollectiveReached:
        metrics = None
    devices = [tensor.device for tensor in two_processes]
    assert devices == [model_device]  # one collective, on the model's device
    if metrics is not None:  # real values: every pixel counted by both processes
        assert sum(map(sum, metrics["confusion_matrix"])) == 2 * 4 * 32 * 32


def test_one_collective_sums_every_accumulator_in_its_own_type(two_processes) -> None:
    from seg.engine.distributed import all_reduce_sums

    counts = torch.tensor([[1, 2], [3, 4]])
    sums = torch.tensor([0.25, 0.5], dtype=torch.float64)
    all_reduce_sums([counts, sums])
    assert len(two_processes) == 1
    assert counts.tolist() == [[2, 4], [6, 8]] and counts.dtype == torch.int64
    assert sums.tolist() == [0.5, 1.0]
