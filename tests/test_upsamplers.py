"""Upsamplers: what a transposed convolution is, and exactness at initialisation."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from seg.data.pixels import IMAGENET_MEAN, IMAGENET_STD
from seg.models import DECODERS, build_encoder, build_model, build_upsampler
from seg.models.phase_kernels import (
    PhaseConvTranspose2d,
    bilinear_kernel,
    conv_transpose_by_phases,
)

FACTORS = list(range(2, 33))
SIZES = [(7, 10), (1, 1), (5, 3)]


def zero_insertion_reference(
    x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int
) -> torch.Tensor:
    """A transposed convolution written out: insert stride - 1 zeros between input pixels,
    pad by k - 1 - p, then a stride-1 convolution with the kernel rotated by 180 degrees."""
    batch, channels, height, width = x.shape
    k = weight.shape[-1]
    dilated = x.new_zeros(batch, channels, (height - 1) * stride + 1, (width - 1) * stride + 1)
    dilated[:, :, ::stride, ::stride] = x
    border = k - 1 - padding
    padded = F.pad(dilated, (border, border, border, border))
    # ConvTranspose2d weights are (in, out, k, k); a convolution wants (out, in, k, k).
    rotated = weight.flip(-1, -2).transpose(0, 1)
    return F.conv2d(padded, rotated)


@pytest.mark.parametrize("layer", [torch.nn.ConvTranspose2d, PhaseConvTranspose2d])
@pytest.mark.parametrize("stride", [2, 3, 4])
@pytest.mark.parametrize("padding", [0, 1])
def test_transposed_conv_is_zero_insertion_then_convolution(layer, stride, padding) -> None:
    torch.manual_seed(stride)
    deconv = layer(3, 2, kernel_size=2 * stride, stride=stride, padding=padding, bias=False)
    x = torch.randn(2, 3, 5, 6)
    expected = zero_insertion_reference(x, deconv.weight.detach(), stride, padding)
    assert torch.allclose(deconv(x), expected, atol=1e-5)


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5, 8, 13, 16, 32])
@pytest.mark.parametrize(("in_channels", "out_channels", "groups"),
                         [(3, 3, 3), (3, 2, 1), (4, 6, 2)])
def test_phase_decomposition_equals_native_transposed_conv(
    factor, in_channels, out_channels, groups
) -> None:
    """Same outputs and same gradients (input and kernel) as F.conv_transpose2d."""
    torch.manual_seed(factor)
    k = 2 * factor - factor % 2
    for height, width in SIZES:
        # the last padding is the transposed upsampler's own
        for padding in sorted({0, factor // 2, (k - 1) // 2, min(factor // 2 + factor, k - 1)}):
            if (min(height, width) - 1) * factor - 2 * padding + k <= 0:
                continue  # no output
            x = torch.randn(2, in_channels, height, width, requires_grad=True)
            weight = torch.randn(in_channels, out_channels // groups, k, k, requires_grad=True)
            native = F.conv_transpose2d(x, weight, stride=factor, padding=padding,
                                        groups=groups)
            phases = conv_transpose_by_phases(x, weight, factor, padding, groups)
            assert phases.shape == native.shape
            assert torch.allclose(phases, native, atol=1e-4)
            upstream = torch.randn_like(native)
            for ours, theirs in zip(torch.autograd.grad(phases, (x, weight), upstream),
                                    torch.autograd.grad(native, (x, weight), upstream),
                                    strict=True):
                assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-3)


def test_our_transposed_upsampler_is_that_construction_on_the_edge_padded_input() -> None:
    upsampler = build_upsampler("transposed", channels=2, factor=4, channelwise=False)
    x = torch.randn(1, 2, 6, 5)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    reference = zero_insertion_reference(padded, upsampler.deconv.weight.detach(), 4, 2 + 4)
    assert torch.allclose(upsampler(x), reference, atol=1e-5)


def fixed_reference(name: str, x: torch.Tensor, factor: int) -> torch.Tensor:
    mode = "nearest" if name == "pixel_shuffle" else "bilinear"
    align_corners = None if mode == "nearest" else False
    return F.interpolate(x, scale_factor=factor, mode=mode, align_corners=align_corners)


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize(("name", "options"), [
    ("bilinear", {}),
    ("transposed", {}),
    ("transposed", {"learnable": False}),
    ("transposed", {"channelwise": False}),
    ("resize_conv", {}),
    ("pixel_shuffle", {}),
    ("bilinear_conv", {}),
    ("dysample", {}),
    ("dysample", {"groups": 3, "dynamic_scope": True}),
    ("dysample_static", {"groups": 3}),
    ("carafe", {}),
    ("carafe", {"kernel_size": 3, "encoder_kernel_size": 1, "compressed_channels": 2}),
    ("carafe_static", {}),
    ("sapa", {}),  # guided: with no guide, by the input upsampled (test_guided_upsamplers:
    ("fade", {}),  # with a skip as the guide)
], ids=["bilinear", "transposed", "transposed-frozen", "transposed-full", "resize_conv",
        "pixel_shuffle", "bilinear_conv", "dysample", "dysample-groups-dynamic",
        "dysample_static", "carafe", "carafe-small", "carafe_static", "sapa", "fade"])
def test_every_upsampler_equals_its_fixed_counterpart_at_init(name, options, factor) -> None:
    upsampler = build_upsampler(name, channels=3, factor=factor, **options)
    for height, width in SIZES:
        x = torch.randn(2, 3, height, width)
        expected = fixed_reference(name, x, factor)
        with torch.no_grad():
            out = upsampler(x)
        assert out.shape == expected.shape
        assert torch.allclose(out, expected, atol=1e-5), (height, width)  # borders included


def test_transposed_kernel_has_fcn_shape() -> None:
    upsampler = build_upsampler("transposed", channels=4, factor=4)
    assert upsampler.deconv.kernel_size == (8, 8) and upsampler.deconv.stride == (4, 4)
    assert upsampler.deconv.weight.requires_grad
    assert torch.equal(upsampler.deconv.weight[2, 0], bilinear_kernel(4))
    assert build_upsampler("transposed", channels=4, factor=3).deconv.kernel_size == (5, 5)
    full = build_upsampler("transposed", channels=3, factor=2, channelwise=False)
    assert full.deconv.weight.shape == (3, 3, 4, 4)
    assert not full.deconv.weight[0, 1].any() and torch.equal(full.deconv.weight[1, 1],
                                                               bilinear_kernel(2))


def test_the_bilinear_conv_control_learns_as_many_weights_as_the_transposed_layer() -> None:
    for factor in (2, 3, 8):
        control = build_upsampler("bilinear_conv", channels=5, factor=factor)
        transposed = build_upsampler("transposed", channels=5, factor=factor)
        assert control.conv.weight.numel() == transposed.deconv.weight.numel()


@pytest.mark.parametrize("factor", [2, 3, 8, 32])
def test_the_bilinear_conv_control_is_resize_then_convolve_away_from_the_borders(factor) -> None:
    control = build_upsampler("bilinear_conv", channels=3, factor=factor)
    with torch.no_grad():
        control.conv.weight.normal_()
        x = torch.randn(2, 3, 9, 7)
        resized = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
        reference = F.conv2d(F.pad(resized, control.same_padding()), control.conv.weight,
                             groups=3)
        out = control(x)
    assert out.shape == reference.shape
    margin = factor + control.conv.kernel_size[0]  # the borders are extended, not zeroed
    inner = (..., slice(margin, -margin), slice(margin, -margin))
    assert torch.allclose(out[inner], reference[inner], atol=1e-3 * factor)


def test_kaiming_init_is_not_bilinear() -> None:
    upsampler = build_upsampler("transposed", channels=3, factor=2, init="kaiming")
    assert not torch.allclose(upsampler.deconv.weight, upsampler.initial_weight)


def test_fixed_upsamplers_have_no_trainable_parameters() -> None:
    for name, options in [("bilinear", {}), ("transposed", {"learnable": False})]:
        upsampler = build_upsampler(name, channels=4, factor=8, **options)
        assert not [p for p in upsampler.parameters() if p.requires_grad]


def test_building_an_upsampler_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(0)
    build_upsampler("transposed", channels=3, factor=2, init="kaiming")
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1))


# images whose normalisation (the model's first step) is a standard normal sample
IMAGENET_MEAN_PIXELS = 255 * torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
IMAGENET_STD_PIXELS = 255 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def losses_over_five_steps(upsampler: str, **options) -> list[float]:
    torch.manual_seed(0)
    upsample = partial(build_upsampler, upsampler, **options)
    model = build_model(build_encoder("simple"), partial(DECODERS.build, "fcn8s"), 4,
                        upsample)
    # a rate at which the loss falls: at 0.05 it rose fivefold in five steps, and the
    # rounding that two thread counts do differently grew past the tolerance
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(5):
        normalised = torch.randn(2, 3, 48, 40, generator=generator)
        images = normalised * IMAGENET_STD_PIXELS + IMAGENET_MEAN_PIXELS  # the model's input
        targets = torch.randint(0, 4, (2, 48, 40), generator=generator)
        loss = F.cross_entropy(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_frozen_transposed_trains_like_bilinear() -> None:
    frozen = losses_over_five_steps("transposed", learnable=False)
    bilinear = losses_over_five_steps("bilinear")
    assert frozen == pytest.approx(bilinear, abs=1e-4)
    assert frozen[0] != frozen[-1]  # it did train


def test_unknown_upsampler_lists_valid_names() -> None:
    valid = ("valid names are bilinear, bilinear_conv, carafe, carafe_static, dysample, "
             "dysample_static, fade, nearest, pixel_shuffle, resize_conv, sapa, sapa_free, "
             "transposed")
    with pytest.raises(ValueError, match=valid):
        build_upsampler("nearest-ish", channels=4, factor=2)


@pytest.mark.parametrize("name", ["transposed", "resize_conv", "pixel_shuffle", "bilinear_conv"])
def test_kernel_drift_is_zero_at_init_and_grows_with_change(name: str) -> None:
    from seg.models.upsamplers import kernel_drift

    upsampler = build_upsampler(name, channels=3, factor=2)
    assert kernel_drift(upsampler) == 0.0
    with torch.no_grad():
        upsampler.weight.mul_(1.5)
    assert kernel_drift(upsampler) == pytest.approx(0.5)
    assert kernel_drift(build_upsampler("bilinear", channels=3, factor=2)) is None


@pytest.mark.parametrize("listed", [True, False])
def test_the_phase_path_runs_only_where_it_was_measured_faster(monkeypatch, listed: bool) -> None:
    from seg.models import phase_kernels

    calls = []

    def spy(*args):
        calls.append(args[2])
        return conv_transpose_by_phases(*args)

    monkeypatch.setattr(phase_kernels, "conv_transpose_by_phases", spy)
    monkeypatch.setitem(phase_kernels.PHASES_FASTER, ("cpu", torch.float32),
                        frozenset({4} if listed else ()))
    layer = PhaseConvTranspose2d(2, 2, 8, stride=4, padding=2, groups=2, bias=False)
    native = torch.nn.functional.conv_transpose2d
    x = torch.randn(1, 2, 5, 5)
    out = layer(x)
    assert calls == ([4] if listed else [])
    assert torch.allclose(out, native(x, layer.weight, stride=4, padding=2, groups=2), atol=1e-5)


def test_the_phase_path_follows_autocast_not_the_input_dtype() -> None:
    from seg.models import phase_kernels

    x = torch.randn(1, 2, 5, 5)  # fp32 scores, as the decoder hands them on
    assert phase_kernels.compute_dtype(x) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert phase_kernels.compute_dtype(x) == torch.bfloat16
