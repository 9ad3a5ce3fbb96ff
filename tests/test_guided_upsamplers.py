"""The feature-guided upsamplers (SAPA, its parameter-free control, FADE): what they
compute, checked against the formulas written out pixel by pixel; that the learned ones
start as bilinear interpolation; the guide of an odd-sized image; ONNX; inside FCN-8s."""

from __future__ import annotations

import io
import math
import warnings
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seg.errors import BadValue
from seg.models import DECODERS, build_encoder, build_model, build_upsampler

GUIDED = ["sapa", "sapa_free", "fade"]
LEARNED = ["sapa", "fade"]  # start exactly as bilinear; sapa_free cannot (no parameters)
SIZES = [(7, 10), (1, 1), (5, 3)]


def bilinear(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def randomised(name: str, channels: int, factor: int, guide_channels: int | None,
               std: float = 0.5):
    """The upsampler with every parameter drawn at random: as if it had learned."""
    torch.manual_seed(0)
    upsampler = build_upsampler(name, channels=channels, factor=factor,
                                guide_channels=guide_channels)
    with torch.no_grad():
        for parameter in upsampler.parameters():
            parameter.normal_(std=std)
    return upsampler


# -- the formulas, written out -------------------------------------------------------------


def axis_taps(o: int, factor: int, size: int) -> list[tuple[int, int, float]]:
    """Along one axis, the input pixels bilinear interpolation (align_corners=False) reads
    for output pixel ``o``: (pixel, clamped to the image; its offset from the source pixel
    ``o // f``; weight), the taps of weight 0 left out."""
    position = (o + 0.5) / factor - 0.5
    low = math.floor(position)
    fraction = position - low
    return [(min(max(i, 0), size - 1), i - o // factor, w)
            for i, w in ((low, 1 - fraction), (low + 1, fraction)) if w > 0]


def guided_sum(x: torch.Tensor, factor: int, logit) -> torch.Tensor:
    """The output written out: at every output pixel p, the taps t that bilinear reads,
    weighted by ``w(t) exp(logit(p, t)) / sum_t w(t) exp(logit(p, t))``. ``logit`` gets
    the output pixel, the tap's pixel and its offset from the source pixel."""
    _, height, width = x.shape
    out = x.new_zeros(x.shape[0], height * factor, width * factor)
    for row in range(height * factor):
        for col in range(width * factor):
            taps = [((i, j), (di, dj), wi * wj)
                    for i, di, wi in axis_taps(row, factor, height)
                    for j, dj, wj in axis_taps(col, factor, width)]
            scores = torch.stack([w * torch.exp(logit((row, col), pixel, offset))
                                  for pixel, offset, w in taps])
            kernel = scores / scores.sum()
            out[:, row, col] = sum(k * x[:, i, j] for k, ((i, j), _, _) in zip(
                kernel, taps, strict=True))
    return out


def layer_norm(v: torch.Tensor, weight=None, bias=None) -> torch.Tensor:
    normalised = (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + 1e-5)
    return normalised if weight is None else normalised * weight + bias


def test_sapa_is_bilinear_reweighted_by_the_learned_similarity() -> None:
    """Tap t of output pixel p: ``w(t) exp(q(LN(g_p)) . k(LN(x_t)))``, normalised."""
    factor, guide_channels = 2, 5
    up = randomised("sapa", 3, factor, guide_channels)
    x, guide = torch.randn(1, 3, 3, 4), torch.randn(1, guide_channels, 6, 8)

    def logit(p, pixel, offset):
        query = up.query.weight @ layer_norm(guide[0, :, p[0], p[1]], up.norm_guide.weight,
                                             up.norm_guide.bias) + up.query.bias
        key = up.key.weight @ layer_norm(x[0, :, pixel[0], pixel[1]], up.norm_input.weight,
                                         up.norm_input.bias) + up.key.bias
        return query @ key

    with torch.no_grad():
        assert torch.allclose(up(x, guide)[0], guided_sum(x[0], factor, logit), atol=1e-4)


@pytest.mark.parametrize("factor", [2, 3])
def test_sapa_free_compares_the_guide_with_the_guide_pooled_to_the_input_grid(factor) -> None:
    """Tap t of output pixel p: ``w(t) exp(LN(g_p) . LN(avgpool_f(g)_t) / sqrt(C_g))``."""
    up = build_upsampler("sapa_free", channels=3, factor=factor, guide_channels=4)
    x, guide = torch.randn(1, 3, 3, 4), torch.randn(1, 4, 3 * factor, 4 * factor)

    def logit(p, pixel, offset):
        i, j = pixel
        block = guide[0, :, i * factor:(i + 1) * factor, j * factor:(j + 1) * factor]
        pooled = block.mean(dim=(1, 2))
        return layer_norm(guide[0, :, p[0], p[1]]) @ layer_norm(pooled) / 2.0

    with torch.no_grad():
        assert torch.allclose(up(x, guide)[0], guided_sum(x[0], factor, logit), atol=1e-5)


def conv_at(feature: torch.Tensor, weight: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """A zero-padded 'same' convolution of ``feature`` (C, H, W), at one pixel."""
    half = weight.shape[-1] // 2
    padded = F.pad(feature, (half,) * 4)
    window = padded[:, row:row + 2 * half + 1, col:col + 2 * half + 1]
    return torch.einsum("ochw,chw->o", weight, window)


@pytest.mark.parametrize("factor", [2, 3])
def test_fade_is_its_kernel_reassembly_plus_the_gated_projected_guide(factor) -> None:
    """Logit of tap t (offset d from the source pixel s = p // f) of output pixel p:
    ``E(C_g g)(p)[d] + E(C_x x)(s)[d]`` (one content encoder E, its bias once); output
    ``sum_t kernel x_t + sigmoid(w . x_s + b) P(g_p)``."""
    guide_channels = 5
    up = randomised("fade", 3, factor, guide_channels)
    x = torch.randn(1, 3, 3, 4)
    guide = torch.randn(1, guide_channels, 3 * factor, 4 * factor)
    compressed_guide = torch.einsum("oc,chw->ohw", up.compress_guide.weight[:, :, 0, 0],
                                    guide[0]) + up.compress_guide.bias[:, None, None]
    compressed_x = torch.einsum("oc,chw->ohw", up.compress_input.weight[:, :, 0, 0], x[0])
    weight = up.encode.weight

    def logit(p, pixel, offset):
        tap = (offset[0] + 1) * 3 + offset[1] + 1  # row-major in the 3 x 3 window
        source = (p[0] // factor, p[1] // factor)
        return (conv_at(compressed_guide, weight, *p)[tap] + up.encode.bias[tap]
                + conv_at(compressed_x, weight, *source)[tap])

    with torch.no_grad():
        expected = guided_sum(x[0], factor, logit)
        for row in range(3 * factor):
            for col in range(4 * factor):
                source = x[0, :, row // factor, col // factor]
                gate = torch.sigmoid(up.gate.weight[0, :, 0, 0] @ source + up.gate.bias[0])
                projected = up.project.weight[:, :, 0, 0] @ guide[0, :, row, col]
                expected[:, row, col] += gate * (projected + up.project.bias)
        assert torch.allclose(up(x, guide)[0], expected, atol=1e-4)


# -- exactly bilinear at initialisation ----------------------------------------------------


@pytest.mark.parametrize("name", LEARNED)
@pytest.mark.parametrize("factor", [2, 3, 4, 8])
@pytest.mark.parametrize("guide_channels", [None, 6])
def test_learned_guided_upsamplers_start_exactly_as_bilinear(name, factor,
                                                             guide_channels) -> None:
    """With a guide (smaller than the output by up to f - 1 pixels) and without one."""
    upsampler = build_upsampler(name, channels=3, factor=factor,
                                guide_channels=guide_channels)
    for height, width in SIZES:
        x = torch.randn(2, 3, height, width)
        guide = None if guide_channels is None else torch.randn(
            2, guide_channels, height * factor - (factor - 1), width * factor)
        with torch.no_grad():
            out = upsampler(x, guide)
        expected = bilinear(x, factor)
        assert out.shape == expected.shape
        assert torch.allclose(out, expected, atol=1e-5), (height, width)  # borders included


def test_sapa_free_is_bilinear_only_where_the_guide_is_flat() -> None:
    """No parameters, so not bilinear at the start: bilinear where every tap is equally
    similar to the guide (a guide that is the same vector everywhere), not elsewhere."""
    upsampler = build_upsampler("sapa_free", channels=3, factor=4, guide_channels=5)
    assert list(upsampler.parameters()) == []
    x = torch.randn(2, 3, 7, 5)
    flat = torch.randn(2, 5, 1, 1).expand(2, 5, 28, 20)
    with torch.no_grad():
        assert torch.allclose(upsampler(x, flat), bilinear(x, 4), atol=1e-5)
        varied = upsampler(x, torch.randn(2, 5, 28, 20))
    assert (varied - bilinear(x, 4)).abs().max() > 0.1


# -- the guide -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", GUIDED)
def test_a_guide_smaller_by_less_than_the_factor_is_extended_by_its_edge(name) -> None:
    upsampler = randomised(name, 3, 4, 5)
    x, guide = torch.randn(1, 3, 5, 6), torch.randn(1, 5, 17, 24)  # 3 rows short of 20
    extended = torch.cat([guide, guide[:, :, -1:].expand(1, 5, 3, 24)], dim=2)
    with torch.no_grad():
        assert torch.equal(upsampler(x, guide), upsampler(x, extended))
    for wrong in (torch.randn(1, 5, 16, 24), torch.randn(1, 5, 21, 24)):
        with pytest.raises(ValueError, match="at most 3 pixels smaller, never larger"):
            upsampler(x, wrong)


@pytest.mark.parametrize("name", GUIDED)
def test_without_a_guide_the_input_upsampled_guides(name) -> None:
    upsampler = randomised(name, 3, 2, None)
    x = torch.randn(1, 3, 4, 5)
    with torch.no_grad():
        assert torch.equal(upsampler(x), upsampler(x, bilinear(x, 2)))
    built_for_a_skip = build_upsampler(name, channels=3, factor=2, guide_channels=8)
    with pytest.raises(ValueError, match="built for a guide of 8 channels and got none"):
        built_for_a_skip(x)


def test_bad_options_are_refused_in_one_line() -> None:
    with pytest.raises(BadValue, match="sapa embedding_dim must be positive"):
        build_upsampler("sapa", channels=3, factor=2, embedding_dim=0)
    with pytest.raises(BadValue, match="fade encoder_kernel_size must be odd"):
        build_upsampler("fade", channels=3, factor=2, encoder_kernel_size=2)


# -- learning, precision, export -----------------------------------------------------------


def test_gradients_reach_the_learned_parts_from_the_start() -> None:
    """At initialisation the parts that start at zero get a gradient (SAPA's query, FADE's
    content encoder and projection); once they have moved, every parameter does."""
    x, guide = torch.randn(2, 3, 5, 6), torch.randn(2, 4, 10, 12)
    starting = {"sapa": ["query.weight", "query.bias"],
                "fade": ["encode.weight", "encode.bias", "project.weight", "project.bias"]}
    for name, moving in starting.items():
        upsampler = build_upsampler(name, channels=3, factor=2, guide_channels=4)
        (upsampler(x, guide) * torch.randn(2, 3, 10, 12)).sum().backward()
        grads = {key: p.grad for key, p in upsampler.named_parameters()}
        assert all(grads[key].abs().sum() > 0 for key in moving), name
        learned = randomised(name, 3, 2, 4)
        (learned(x, guide) * torch.randn(2, 3, 10, 12)).sum().backward()
        assert all(p.grad.abs().sum() > 0 for p in learned.parameters()), name


@pytest.mark.parametrize("name", GUIDED)
def test_bf16_autocast_and_channels_last_follow_fp32(name) -> None:
    """Within bf16's precision: the logits of weights this size are a few units, each
    within 1% (bf16 has 8 bits), and so are the kernels the softmax makes of them."""
    upsampler = randomised(name, 8, 4, 16, std=0.1)
    x = torch.randn(2, 8, 9, 7).to(memory_format=torch.channels_last)
    guide = torch.randn(2, 16, 33, 28).to(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = upsampler(x, guide)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = upsampler(x, guide)
    assert out.shape == expected.shape and torch.isfinite(out).all()
    assert (out.float() - expected).abs().max() <= 0.05 * expected.abs().max()


class WithGuide(torch.nn.Module):
    def __init__(self, upsampler: torch.nn.Module) -> None:
        super().__init__()
        self.upsampler = upsampler

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return self.upsampler(x, guide)


@pytest.mark.parametrize("name", GUIDED)
@pytest.mark.parametrize("opset", [11, 18])
def test_onnx_export_matches_pytorch_at_odd_sizes(name, opset) -> None:
    """Every upsampler needs only opset 11, seg-export's lowest (LayerNorm is decomposed
    below 17); exported at one size, run at odd ones with a guide a row short."""
    import onnxruntime

    model = WithGuide(randomised(name, 3, 2, 5)).eval()
    graph = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 4, 4), torch.randn(1, 5, 8, 8)), graph,
                          input_names=["x", "guide"], output_names=["out"],
                          opset_version=opset, dynamo=False,
                          dynamic_axes={"x": axes, "guide": axes, "out": axes})
    session = onnxruntime.InferenceSession(graph.getvalue(),
                                           providers=["CPUExecutionProvider"])
    for height, width in ((5, 7), (9, 4)):
        x, guide = torch.randn(2, 3, height, width), torch.randn(2, 5, 2 * height - 1,
                                                                 2 * width)
        with torch.no_grad():
            expected = model(x, guide).numpy()
        (out,) = session.run(None, {"x": x.numpy(), "guide": guide.numpy()})
        assert out.shape == expected.shape
        assert np.abs(out - expected).max() <= 1e-4


# -- inside a decoder ----------------------------------------------------------------------


def fcn8s(upsampler: str, seed: int = 0):
    torch.manual_seed(seed)
    encoder = build_encoder("simple", stem_width=8, widths=[8, 16, 24, 32],
                            depths=[1, 1, 1, 1])
    return build_model(encoder, partial(DECODERS.build, "fcn8s"), 4,
                       partial(build_upsampler, upsampler))


@pytest.mark.parametrize("name", GUIDED)
def test_fcn8s_guides_its_fuse_steps_by_the_encoder_taps(name) -> None:
    """The fuse steps get the skips (stride 8: 16 channels, stride 16: 24) as guides, the
    final x8 step none; forward and backward at an odd size."""
    model = fcn8s(name)
    steps = model.decoder.upsamplers()
    assert [step.guide_channels for step in steps] == [24, 16, 4]
    images = torch.rand(2, 3, 67, 45) * 255
    logits = model(images)
    assert logits.shape == (2, 4, 67, 45)
    F.cross_entropy(logits, torch.randint(0, 4, (2, 67, 45))).backward()
    assert all(p.grad is not None for step in steps for p in step.parameters())


@pytest.mark.parametrize("name", LEARNED)
def test_fcn8s_with_learned_guided_steps_equals_its_bilinear_twin_at_init(name) -> None:
    guided, twin = fcn8s(name), fcn8s("bilinear")
    for score, twin_score in zip(guided.decoder.score, twin.decoder.score, strict=True):
        torch.nn.init.normal_(score.weight, std=0.1)  # skips start at zero: give them weights
        twin_score.weight.data.copy_(score.weight.data)
    images = torch.rand(1, 3, 67, 45) * 255
    with torch.no_grad():
        assert torch.allclose(guided(images), twin(images), atol=1e-5)
