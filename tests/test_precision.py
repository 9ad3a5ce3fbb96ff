"""Depthwise convolutions kept in fp32 under the CPU's bf16 autocast
(seg.engine.precision.keep_depthwise_in_fp32)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seg.engine.precision import Float32Convolution, keep_depthwise_in_fp32


class SamePadded(nn.Conv2d):
    """A convolution class with its own forward, as timm's Conv2dSame has."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                         SamePadded(8, 8, 3, stride=2, groups=8), nn.Conv2d(8, 8, 3, groups=2),
                         nn.Conv2d(8, 4, 1))


def test_only_the_depthwise_convolutions_change_class_and_nothing_else_changes():
    net = small_net()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert keep_depthwise_in_fp32(net) == 2
    kept = [isinstance(m, Float32Convolution) for m in net]
    assert kept == [False, True, True, False, False]  # grouped (2 groups) is not depthwise
    assert isinstance(net[2], SamePadded) and type(net[2]).__name__ == "Float32SamePadded"
    assert net.state_dict().keys() == state.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    assert keep_depthwise_in_fp32(net) == 0  # a second call converts nothing twice


def test_under_bf16_autocast_a_kept_layer_computes_in_fp32_and_hands_on_bf16():
    net = small_net()
    x = torch.randn(2, 8, 9, 9)
    depthwise, same_padded = net[1], net[2]
    with torch.no_grad():
        expected = [depthwise(x), same_padded(x)]  # fp32, no autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):
            before = depthwise(x)
        keep_depthwise_in_fp32(net)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            after = [depthwise(x), same_padded(x)]
    assert all(out.dtype == torch.bfloat16 for out in (before, *after))
    for out, reference in zip(after, expected, strict=True):
        assert torch.equal(out, reference.to(torch.bfloat16))  # only the final rounding
    assert not torch.equal(before, after[0])  # bf16 inputs and weights did round before


def test_without_autocast_a_kept_layer_is_the_plain_layer():
    net = small_net()
    x = torch.randn(2, 3, 9, 9)
    expected = net(x)
    keep_depthwise_in_fp32(net)
    assert torch.equal(net(x), expected)


def test_gradients_reach_a_kept_layer_in_fp32():
    net = small_net()
    keep_depthwise_in_fp32(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = net(torch.randn(2, 3, 9, 9)).float().square().mean()
    loss.backward()
    for layer in (net[1], net[2]):
        assert layer.weight.grad is not None and layer.weight.grad.dtype == torch.float32
        assert layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("precision, kept", [("bf16", True), ("32", False)])
def test_the_trainer_keeps_depthwise_layers_in_fp32_only_for_cpu_bf16(precision, kept):
    from seg.engine.loop import Trainer

    net = small_net()
    Trainer(max_iters=1, eval_every=1, device="cpu", precision=precision).place(net)
    assert isinstance(net[1], Float32Convolution) is kept


def test_the_reason_for_a_precision_says_whether_it_was_set_or_what_auto_saw():
    from seg.engine.precision import precision_reason

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert precision_reason("32", "32", cpu) == "trainer.precision"
    assert precision_reason(32, "32", cpu) == "trainer.precision"
    assert "runs bf16 natively" in precision_reason("auto", "bf16", cpu)
    assert "depthwise" in precision_reason("auto", "bf16", cpu)
    assert "no native bf16" in precision_reason("auto", "32", cpu)
    assert precision_reason("auto", "bf16", cuda) == "auto: this GPU runs bf16"
    assert "gradient scaling" in precision_reason("auto", "16", cuda)


def test_the_run_log_names_the_precision_and_why(compose_train, tmp_path, caplog):
    from seg.training import train

    with caplog.at_level("INFO", logger="seg.train"):
        train(compose_train("trainer.precision=32"), tmp_path / "run")
    started = [r.message for r in caplog.records if r.message.startswith("training ")]
    assert len(started) == 1 and "(precision 32: trainer.precision; evaluations in fp32" \
        in started[0]


def test_a_channelwise_phase_convolution_runs_in_fp32_under_cpu_bf16_autocast():
    from seg.models.phase_kernels import phase_convolution

    torch.manual_seed(0)
    window = torch.randn(2, 4, 9, 9, requires_grad=True)
    weight = torch.randn(16, 1, 2, 2, requires_grad=True)  # 4 phases per channel
    exact = torch.nn.functional.conv2d(window, weight, groups=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = phase_convolution(window, weight, groups=4)
        mixed = phase_convolution(window, torch.randn(8, 2, 2, 2), groups=2)
    assert out.dtype == torch.bfloat16 and mixed.dtype == torch.bfloat16
    # computed in fp32 and rounded once: within bf16's half-ulp of the exact result
    assert torch.allclose(out.float(), exact, rtol=2**-8, atol=1e-6)
    out.float().sum().backward()
    assert weight.grad is not None and weight.grad.dtype == torch.float32
    assert window.grad is not None and window.grad.abs().sum() > 0
