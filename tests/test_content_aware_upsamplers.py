"""The content-aware upsamplers (DySample, CARAFE) and their static controls: what they
compute once they have learned something, checked against the formulas written out."""

import pytest
import torch
import torch.nn.functional as F

from seg.errors import BadValue
from seg.models import build_upsampler
from seg.models.carafe import bilinear_reassembly_kernels

CONTENT_AWARE = {"dysample": "dysample_static", "carafe": "carafe_static"}


def randomised(name: str, **options) -> torch.nn.Module:
    """The upsampler with every parameter drawn at random: as if it had learned."""
    torch.manual_seed(0)
    upsampler = build_upsampler(name, channels=4, factor=3, **options)
    with torch.no_grad():
        for parameter in upsampler.parameters():
            parameter.normal_(std=0.3)
    return upsampler


def test_dysample_static_with_a_whole_pixel_offset_reads_the_neighbouring_pixel() -> None:
    """Offset (+1, 0) everywhere: bilinear interpolation of the image moved one column
    left, the last column repeated (border padding, as interpolation clamps), except in
    the first f / 2 columns, where interpolation clamps before the offset applies."""
    upsampler = build_upsampler("dysample_static", channels=2, factor=4)
    with torch.no_grad():
        upsampler.phase_offsets[:, 0] = 1.0
        x = torch.randn(1, 2, 5, 6)
        moved = torch.cat([x[..., 1:], x[..., -1:]], dim=-1)
        expected = F.interpolate(moved, scale_factor=4, mode="bilinear", align_corners=False)
        assert torch.allclose(upsampler(x)[..., 2:], expected[..., 2:], atol=1e-5)


def test_dysample_reads_each_output_pixel_where_its_offset_points() -> None:
    """One output pixel written out: bilinear sampling of the input at the point
    interpolation would read plus the predicted offset (input pixels)."""
    upsampler = randomised("dysample", groups=2)
    x = torch.randn(1, 4, 5, 6)
    with torch.no_grad():
        out, offsets = upsampler(x), upsampler.offsets(x)
    row, col, f = 7, 10, 3
    for group in range(2):
        dx, dy = offsets[0, group, :, row, col]
        y = ((row + 0.5) / f - 0.5 + dy).clamp(0, 4)  # border: clamp to the image
        x_at = ((col + 0.5) / f - 0.5 + dx).clamp(0, 5)
        y0, x0 = int(y.floor().clamp(max=3)), int(x_at.floor().clamp(max=4))
        wy, wx = y - y0, x_at - x0
        patch = x[0, 2 * group:2 * group + 2, y0:y0 + 2, x0:x0 + 2]
        expected = ((1 - wy) * (1 - wx) * patch[:, 0, 0] + (1 - wy) * wx * patch[:, 0, 1]
                    + wy * (1 - wx) * patch[:, 1, 0] + wy * wx * patch[:, 1, 1])
        assert torch.allclose(out[0, 2 * group:2 * group + 2, row, col], expected, atol=1e-5)


def test_carafe_is_a_weighted_sum_of_the_neighbourhood_of_the_source_pixel() -> None:
    upsampler = randomised("carafe")
    x = torch.randn(1, 4, 5, 6)
    with torch.no_grad():
        out, kernels = upsampler(x), upsampler.kernels(x)  # (1, 5 x 6, 9, 25)
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    for row, col in [(0, 0), (7, 10), (14, 17)]:
        i, r, j, t = row // 3, row % 3, col // 3, col % 3
        kernel = kernels[0, i * 6 + j, r * 3 + t].view(5, 5)
        neighbourhood = padded[0, :, i:i + 5, j:j + 5]
        expected = (neighbourhood * kernel).sum(dim=(-1, -2))
        assert torch.allclose(out[0, :, row, col], expected, atol=1e-5)


@pytest.mark.parametrize("name", ["carafe", "carafe_static"])
def test_carafe_kernels_sum_to_one_wherever_they_have_moved(name: str) -> None:
    upsampler = randomised(name)
    kernels = upsampler.kernels(torch.randn(2, 4, 5, 6))
    assert torch.allclose(kernels.sum(dim=-1), torch.ones(()), atol=1e-5)
    assert kernels.min() >= -1 / 25 - 1e-6  # below zero by at most 1 / k^2


def test_the_bilinear_reassembly_kernel_is_interpolation_s_weights() -> None:
    kernels = bilinear_reassembly_kernels(factor=2, kernel_size=3).view(3, 3, 2, 2)
    # output pixel 2i reads position i - 1/4: 1/4 of pixel i - 1 and 3/4 of pixel i
    assert torch.allclose(kernels[:, :, 0, 0], torch.outer(torch.tensor([0.25, 0.75, 0.0]),
                                                           torch.tensor([0.25, 0.75, 0.0])))
    odd = bilinear_reassembly_kernels(factor=3, kernel_size=5).view(5, 5, 3, 3)
    assert odd[2, 2, 1, 1] == 1.0 and odd[:, :, 1, 1].sum() == 1.0  # the middle phase


@pytest.mark.parametrize(("aware", "static"), CONTENT_AWARE.items())
def test_only_the_content_aware_one_changes_its_filter_with_the_input(aware, static) -> None:
    """Linear in the input for the static control (one filter everywhere), not for the
    content-aware upsampler: its filter depends on what it upsamples."""
    x, y = torch.randn(1, 4, 5, 6), torch.randn(1, 4, 5, 6)
    for name, linear in ((static, True), (aware, False)):
        upsampler = randomised(name)
        with torch.no_grad():
            together, apart = upsampler(x + y), upsampler(x) + upsampler(y)
        assert torch.allclose(together, apart, atol=1e-4) == linear, name


def test_options_out_of_range_are_one_line_errors() -> None:
    with pytest.raises(BadValue, match="groups=4 must divide the 6 channels"):
        build_upsampler("dysample", channels=6, factor=2, groups=4)
    with pytest.raises(BadValue, match="kernel_size must be odd"):
        build_upsampler("carafe", channels=6, factor=2, kernel_size=4)
    with pytest.raises(BadValue, match="compressed_channels must be positive"):
        build_upsampler("carafe", channels=6, factor=2, compressed_channels=0)


def test_carafe_compresses_to_at_most_its_ceiling() -> None:
    assert build_upsampler("carafe", channels=8, factor=2).compress.out_channels == 8
    assert build_upsampler("carafe", channels=150, factor=2).compress.out_channels == 64


@pytest.mark.parametrize("name", ["dysample", "dysample_static", "carafe", "carafe_static"])
def test_it_learns_from_its_bilinear_start(name: str) -> None:
    """Every parameter gets a gradient at the first step, although the offsets or
    logits start at zero (CARAFE's compressor follows once its encoder has moved)."""
    upsampler = build_upsampler(name, channels=4, factor=4)
    torch.manual_seed(1)
    x, target = torch.randn(2, 4, 6, 5), torch.randn(2, 4, 24, 20)
    (upsampler(x) - target).pow(2).mean().backward()
    for parameter_name, parameter in upsampler.named_parameters():
        if not parameter_name.startswith("compress."):
            assert parameter.grad.abs().sum() > 0, parameter_name
