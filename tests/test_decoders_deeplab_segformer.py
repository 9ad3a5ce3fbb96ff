"""The deeplabv3plus and segformer decoders: the same parameters and shapes as
segmentation_models_pytorch's (SMP 0.6) with its fixed resizes, every learned upsampler
inside them starting as their bilinear twin, and every upsampler trains in them."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from seg.errors import BadValue
from seg.models import DECODERS, UPSAMPLERS, build_encoder, build_model, build_upsampler
from seg.models.upsamplers import is_guided

DECODER_SETTINGS = [("deeplabv3plus", {}), ("segformer", {})]
SETTING_IDS = ["deeplabv3plus", "segformer"]
CLASSES = 6


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --- SMP parity: parameters and shapes, timm's tf_efficientnet_lite0 on both sides -------

@pytest.fixture(scope="module")
def smp():
    return pytest.importorskip("segmentation_models_pytorch")  # the dev extra's peer


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("timm")
    return build_encoder("timm", model_name="tf_efficientnet_lite0").eval()


def ours(encoder, name: str, **options) -> nn.Module:
    return build_model(encoder, partial(DECODERS.build, name, **options), CLASSES,
                       partial(build_upsampler, "bilinear")).eval()


def smp_decoder_and_head(model: nn.Module) -> int:
    return trainable(model.decoder) + trainable(model.segmentation_head)


def output_shape(model: nn.Module, height: int, width: int) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(model(torch.randn(1, 3, height, width)).shape)


def map_shape(module: nn.Module, model: nn.Module, height: int, width: int
              ) -> tuple[int, ...]:
    """The shape of what ``module``, a part of ``model``, outputs for an image."""
    shapes = []
    hook = module.register_forward_hook(lambda _, __, out: shapes.append(tuple(out.shape)))
    output_shape(model, height, width)
    hook.remove()
    return shapes[0]


def test_deeplabv3plus_has_smps_parameters_and_shapes(smp, lite0) -> None:
    """The parameters and output shapes of SMP's default (its last stage dilated to
    stride 16); our undilated encoder's ASPP map is at stride 32, not 16."""
    peer = smp.DeepLabV3Plus("tu-tf_efficientnet_lite0", encoder_weights=None,
                             classes=CLASSES).eval()
    model = ours(lite0, "deeplabv3plus")
    assert trainable(model.decoder) == smp_decoder_and_head(peer)
    for height, width in [(128, 128), (96, 160)]:
        assert output_shape(model, height, width) == output_shape(peer, height, width)
        assert (map_shape(model.decoder.fuse, model, height, width)
                == map_shape(peer.decoder, peer, height, width))  # the stride-4 fusion
        ours_aspp = map_shape(model.decoder.aspp, model, height, width)
        peer_aspp = map_shape(peer.decoder.aspp, peer, height, width)
        assert ours_aspp == (*peer_aspp[:2], peer_aspp[2] // 2, peer_aspp[3] // 2)


def smp_segformer_on_four_taps(smp, channels: tuple[int, ...]) -> nn.Module:
    """SMP's Segformer decoder and head for an encoder with no stride-2 feature (SMP gives
    it 0 channels, as for its MiT encoders): the paper's four levels, as ours."""
    from segmentation_models_pytorch.base import SegmentationHead
    from segmentation_models_pytorch.decoders.segformer.decoder import SegformerDecoder

    decoder = SegformerDecoder([3, 0, *channels], encoder_depth=5, segmentation_channels=256)
    return nn.ModuleDict({"decoder": decoder, "segmentation_head": SegmentationHead(
        256, CLASSES, kernel_size=1, upsampling=4)}).eval()


def test_segformer_has_smps_parameters_and_shapes(smp, lite0) -> None:
    model = ours(lite0, "segformer")
    peer = smp_segformer_on_four_taps(smp, lite0.channels)
    assert trainable(model.decoder) == trainable(peer)
    for height, width in [(128, 128), (96, 160)]:
        images = torch.randn(1, 3, height, width)
        with torch.no_grad():
            taps = lite0(images)
            no_stride_2 = images.new_zeros(1, 0, height // 2, width // 2)
            fused = peer["decoder"]([images, no_stride_2, *taps])
            logits = peer["segmentation_head"](fused)
        assert output_shape(model, height, width) == tuple(logits.shape)
        assert map_shape(model.decoder.fuse, model, height, width) == tuple(fused.shape)


def test_smps_full_segformer_differs_only_by_its_stride_2_level(smp, lite0) -> None:
    """With a CNN encoder SMP adds a fifth level, the stride-2 feature (16 channels for
    lite0): its linear layer and its share of the fusion conv are the whole difference."""
    peer = smp.Segformer("tu-tf_efficientnet_lite0", encoder_weights=None, classes=CLASSES)
    stride_2_channels, width = peer.encoder.out_channels[1], 256
    extra = stride_2_channels * width + width + width * width
    assert smp_decoder_and_head(peer) == trainable(ours(lite0, "segformer").decoder) + extra


# --- every learned upsampler starts as its fixed twin inside the decoders --------------

ZOO = [
    ("transposed", {}),
    ("transposed", {"learnable": False}),
    ("transposed", {"channelwise": False}),
    ("bilinear_conv", {}),
    ("resize_conv", {}),
    ("resize_conv", {"mode": "nearest"}),
    ("pixel_shuffle", {}),
    ("dysample", {}),
    ("dysample", {"groups": 3, "dynamic_scope": True}),
    ("dysample_static", {"groups": 3}),
    ("carafe", {}),
    ("carafe", {"kernel_size": 3, "encoder_kernel_size": 1, "compressed_channels": 2}),
    ("carafe_static", {}),
]


def learns(name: str) -> bool:
    """Whether upsampler ``name`` has weights to learn: a parameter-free one other than
    the fixed resizes (sapa_free, the adaptivity control) adapts from the start."""
    return trainable(build_upsampler(name, channels=4, factor=2, guide_channels=4)) > 0


# what registers later (the feature-guided ones) is covered too, with its defaults
ZOO += [(name, {}) for name in sorted(UPSAMPLERS)
        if name not in {zoo_name for zoo_name, _ in ZOO} and learns(name)]
NEAREST_TWINS = {("pixel_shuffle", ()), ("resize_conv", (("mode", "nearest"),))}


def zoo_id(entry: tuple[str, dict]) -> str:
    name, options = entry
    return "-".join([name, *(f"{key}={value}" for key, value in options.items())])


def tiny_encoder() -> nn.Module:
    return build_encoder("simple", stem_width=8, widths=(8, 12, 16, 24),
                         depths=(1, 1, 1, 1)).eval()


def decoder_model(encoder, name: str, options: dict, upsampler: str, seed: int = 0,
                  **upsampler_options) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(encoder, partial(DECODERS.build, name, channels=24, **options), CLASSES,
                       partial(build_upsampler, upsampler, **upsampler_options))


@pytest.mark.parametrize(("name", "options"), DECODER_SETTINGS, ids=SETTING_IDS)
@pytest.mark.parametrize("upsampler", ZOO, ids=zoo_id)
def test_every_learned_upsampler_starts_as_its_fixed_twin_inside_the_decoder(
        name, options, upsampler) -> None:
    upsampler_name, upsampler_options = upsampler
    twin = ("nearest" if (upsampler_name, tuple(upsampler_options.items())) in NEAREST_TWINS
            else "bilinear")
    encoder = tiny_encoder()
    learned = decoder_model(encoder, name, options, upsampler_name, **upsampler_options).eval()
    fixed = decoder_model(encoder, name, options, twin).eval()
    # the same decoder weights (upsamplers draw from their own RNG), the steps aside
    fixed_weights = fixed.decoder.state_dict()
    assert all(torch.equal(value, fixed_weights[key])
               for key, value in learned.decoder.state_dict().items() if key in fixed_weights)
    images = 255 * torch.rand(2, 3, 45, 70)  # odd sizes: the crops and the borders count
    with torch.no_grad():
        expected = fixed(images)
        out = learned(images)
    assert out.shape == (2, CLASSES, 45, 70)
    assert torch.allclose(out, expected, atol=1e-5), (out - expected).abs().max()


def test_the_exact_at_init_check_sees_a_step_that_starts_elsewhere() -> None:
    encoder = tiny_encoder()
    learned = decoder_model(encoder, "segformer", {}, "transposed", init="kaiming").eval()
    fixed = decoder_model(encoder, "segformer", {}, "bilinear").eval()
    images = 255 * torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(learned(images), fixed(images), atol=1e-5)


# --- every upsampler trains inside them ----------------------------------------------

@pytest.mark.parametrize(("name", "options"), DECODER_SETTINGS, ids=SETTING_IDS)
@pytest.mark.parametrize("upsampler", sorted(UPSAMPLERS))
def test_forward_and_backward_with_every_upsampler(name, options, upsampler) -> None:
    model = decoder_model(tiny_encoder(), name, options, upsampler).train()
    images = 255 * torch.rand(2, 3, 37, 50)
    targets = torch.randint(0, CLASSES, (2, 37, 50))
    logits = model(images)
    assert logits.shape == (2, CLASSES, 37, 50)
    nn.functional.cross_entropy(logits, targets).backward()
    for key, parameter in model.decoder.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), key
    steps = model.decoder.upsamplers()
    assert all(id(p) in {id(q) for q in model.decoder.parameters()}
               for step in steps for p in step.parameters())
    inner = 1 if name == "deeplabv3plus" else 3  # segformer: strides 8, 16, 32 to 4
    assert len(steps) == inner + 1


# --- taps by stride, the final step apart, and the errors -------------------------------

@pytest.mark.parametrize(("name", "options"), DECODER_SETTINGS, ids=SETTING_IDS)
def test_taps_are_picked_by_stride_so_a_stride_2_tap_is_left_out(name, options) -> None:
    four = {"in_channels": (8, 16, 24, 32), "strides": (4, 8, 16, 32)}
    five = {"in_channels": (4, 8, 16, 24, 32), "strides": (2, 4, 8, 16, 32)}
    torch.manual_seed(0)
    plain = DECODERS.build(name, num_classes=CLASSES, **four, **options).eval()
    torch.manual_seed(0)
    with_stride_2 = DECODERS.build(name, num_classes=CLASSES, **five, **options).eval()
    assert trainable(plain) == trainable(with_stride_2)
    taps = [torch.randn(1, c, 64 // s, 96 // s)
            for c, s in zip(five["in_channels"], five["strides"], strict=True)]
    with torch.no_grad():
        assert torch.equal(plain(taps[1:], (64, 96)), with_stride_2(taps, (64, 96)))


def test_a_dilated_encoders_last_stage_feeds_aspp() -> None:
    sizes = {"in_channels": (8, 16, 24, 32), "num_classes": CLASSES}
    for strides, factor, aspp_stride in [((4, 8, 16, 16), 4, 16), ((4, 8, 16, 16), 4, 32),
                                         ((4, 8, 8, 8), 2, 32)]:
        decoder = DECODERS.build("deeplabv3plus", strides=strides, **sizes,
                                 aspp_stride=aspp_stride,
                                 upsampler=partial(build_upsampler, "transposed"))
        assert decoder.aspp_tap == 3 and decoder.up_factor == decoder.up.factor == factor


@pytest.mark.parametrize("name", ["deeplabv3plus", "segformer"])
def test_the_final_step_has_its_own_upsampler(name) -> None:
    decoder = DECODERS.build(name, in_channels=(8, 16, 24, 32), strides=(4, 8, 16, 32),
                             num_classes=CLASSES,
                             upsampler=partial(build_upsampler, "transposed"),
                             final_upsampler=partial(build_upsampler, "bilinear"))
    *inner, final = decoder.upsamplers()
    assert all(trainable(step) > 0 for step in inner) and trainable(final) == 0
    assert final.factor == 4 and decoder.output_stride == 4


def test_guided_steps_are_guided_by_the_stride_4_tap() -> None:
    guided = [name for name in UPSAMPLERS if is_guided(UPSAMPLERS.entry(name).builder)]
    if not guided:
        pytest.skip("no feature-guided upsampler is registered")
    calls = []

    def factory(channels, factor, guide_channels=None):
        calls.append(guide_channels)
        return build_upsampler("bilinear", channels=channels, factor=factor)

    for name in ("deeplabv3plus", "segformer"):
        calls.clear()
        DECODERS.build(name, in_channels=(8, 16, 24, 32), strides=(4, 8, 16, 32),
                       num_classes=CLASSES, upsampler=factory)
        assert calls[:-1] and set(calls[:-1]) == {8} and calls[-1] is None, name


@pytest.mark.parametrize(("name", "options", "message"), [
    ("deeplabv3plus", {"aspp_stride": 24}, "model.decoder.aspp_stride=24: use 16 or 32"),
    ("deeplabv3plus", {"aspp_stride": 16}, "aspp_stride=16 leaves the encoder's stride-32 "
                                           "stage unused: use aspp_stride=32"),
    ("deeplabv3plus", {"strides": (8, 16, 32, 64)}, "fuses at stride 4; this encoder's taps"),
    ("segformer", {"strides": (8, 16, 32, 64)}, "fuses at stride 4; this encoder's taps"),
    ("segformer", {"strides": (4, 6, 12, 24)}, "whose strides are multiples of 4"),
])
def test_what_a_decoder_cannot_use_is_refused_in_one_line(name, options, message) -> None:
    arguments = {"in_channels": (8, 16, 24, 32), "strides": (4, 8, 16, 32),
                 "num_classes": CLASSES, **options}
    with pytest.raises(BadValue) as error:
        DECODERS.build(name, **arguments)
    assert message in str(error.value) and "\n" not in str(error.value)
