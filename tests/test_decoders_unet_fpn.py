"""The U-Net and FPN decoders: SMP 0.6's structure (parameters, shapes, and with SMP's own
fixed resizes its outputs), every upsampler of the zoo starting as its fixed twin inside
them, and a training step with each."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seg.errors import BadValue
from seg.models import DECODERS, UPSAMPLERS, build_encoder, build_model, build_upsampler
from seg.models.upsamplers import BilinearUpsampler

smp = pytest.importorskip("segmentation_models_pytorch")

ENCODER = "tf_efficientnet_lite0"
CLASSES = 8
SMP_SIZES = [(128, 128), (96, 160)]  # SMP's FPN takes only sizes divisible by 32
IN_CHANNELS, STRIDES = (8, 16, 24, 32), (4, 8, 16, 32)
IMAGE = (45, 61)  # odd: every tap's size is rounded up, as the convolutional encoders do

# controls that do not start as a fixed upsampler, by design (each module says why)
CONTROLS = {"sapa_free"}  # SAPA-I: no parameters, bilinear only where its guide is flat
# every upsampler with its defaults, and the option variants of configs/model/upsampler
CASES = [(name, {}) for name in sorted(UPSAMPLERS) if name not in CONTROLS] + [
    ("transposed", {"learnable": False}),
    ("transposed", {"channelwise": False}),
    ("resize_conv", {"mode": "nearest"}),
    ("dysample", {"groups": 4, "dynamic_scope": True}),
    ("dysample_static", {"groups": 4}),
    ("carafe", {"kernel_size": 3, "encoder_kernel_size": 1, "compressed_channels": 2}),
]
CASE_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in options.items())}".rstrip("-")
            for name, options in CASES]


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def ours(decoder: str, upsampler: str, **encoder_options: object) -> nn.Module:
    """seg's model on timm's encoder, normalising nothing (SMP's models take the input as
    it comes): the pixels go to the encoder as they are."""
    encoder = build_encoder("timm", model_name=ENCODER, **encoder_options)
    return build_model(encoder, partial(DECODERS.build, decoder), CLASSES,
                       partial(build_upsampler, upsampler), mean=(0.0,) * 3,
                       std=(1 / 255,) * 3).eval()


def peer(cls: type) -> nn.Module:
    return cls(f"tu-{ENCODER}", encoder_weights=None, classes=CLASSES).eval()


def peer_decoder_parameters(model: nn.Module) -> int:
    return parameters(model.decoder) + parameters(model.segmentation_head)


def same_outputs(mine: nn.Module, theirs: nn.Module, height: int, width: int) -> bool:
    x = torch.randn(2, 3, height, width)
    with torch.no_grad():
        return torch.allclose(mine(x), theirs(x), atol=1e-5)


@pytest.fixture(scope="module")
def smp_unet() -> nn.Module:
    torch.manual_seed(0)
    return peer(smp.Unet)


@pytest.fixture(scope="module")
def smp_fpn() -> nn.Module:
    torch.manual_seed(0)
    return peer(smp.FPN)


def test_unet_is_smps_unet_with_its_stride_2_skip(smp_unet) -> None:
    model = ours("unet", "nearest", finest_stride=2)
    assert parameters(model.decoder) == peer_decoder_parameters(smp_unet)
    for height, width in [*SMP_SIZES, (100, 130)]:  # SMP's U-Net takes any size
        x = torch.randn(1, 3, height, width)
        with torch.no_grad():
            assert model(x).shape == smp_unet(x).shape == (1, CLASSES, height, width)
    # SMP's weights in seg's modules, in the same order: the same function
    model.encoder.body.load_state_dict(dict(zip(model.encoder.body.state_dict(),
                                                smp_unet.encoder.model.state_dict().values(),
                                                strict=True)))
    theirs = [*smp_unet.decoder.state_dict().values(),
              *smp_unet.segmentation_head.state_dict().values()]
    model.decoder.load_state_dict(dict(zip(model.decoder.state_dict(), theirs, strict=True)))
    assert same_outputs(model, smp_unet, 128, 160)


def test_without_the_stride_2_tap_unet_lacks_only_that_skip(smp_unet) -> None:
    model = ours("unet", "nearest")
    stride_2_channels, block_width = 16, 32  # its block to stride 2: 3x3 convs, 32 maps
    assert (peer_decoder_parameters(smp_unet) - parameters(model.decoder)
            == stride_2_channels * block_width * 3 * 3)


class SMPResize(nn.Module):
    """SMP FPN's fixed resizes: nearest, or bilinear with ``align_corners=True``."""

    def __init__(self, factor: int, mode: str) -> None:
        super().__init__()
        self.factor, self.mode = factor, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        align_corners = True if self.mode == "bilinear" else None
        return F.interpolate(x, scale_factor=self.factor, mode=self.mode,
                             align_corners=align_corners)


def smp_fpn_steps(channels: int, factor: int, guide_channels: int | None = None) -> nn.Module:
    """SMP's FPN upsamples the pyramid (256 maps) nearest, the rest bilinear."""
    return SMPResize(factor, "nearest" if channels == 256 else "bilinear")


def smp_fpn_key(key: str) -> str:
    """The key of seg's FPN decoder for one of SMP's FPN decoder and head."""
    laterals = {"p5": 3, "p4": 2, "p3": 1, "p2": 0}  # SMP: coarse first; seg: finest first
    top, _, rest = key.partition(".")
    if top in laterals:
        return f"lateral.{laterals[top]}.{rest.removeprefix('skip_conv.')}"
    if top == "0":  # the segmentation head's conv
        return f"head.{rest}"
    _, level, _, conv, _, layer, tensor = key.split(".")  # seg_blocks.L.block.C.block.N.t
    return f"blocks.{3 - int(level)}.convs.{conv}.{layer}.{tensor}"


def test_fpn_is_smps_fpn(smp_fpn) -> None:
    model = ours("fpn", "nearest")
    assert parameters(model.decoder) == peer_decoder_parameters(smp_fpn)
    for height, width in SMP_SIZES:
        x = torch.randn(1, 3, height, width)
        with torch.no_grad():
            assert model(x).shape == smp_fpn(x).shape == (1, CLASSES, height, width)
    with pytest.raises(RuntimeError, match="divisible by 32"):
        smp_fpn(torch.randn(1, 3, 100, 130))
    with torch.no_grad():  # seg's crops where SMP refuses
        assert model(torch.randn(1, 3, 100, 130)).shape == (1, CLASSES, 100, 130)
    # with SMP's own resizes and weights, the same function
    model.decoder = DECODERS.build("fpn", in_channels=model.encoder.channels,
                                   strides=model.encoder.strides, num_classes=CLASSES,
                                   upsampler=smp_fpn_steps).eval()
    model.encoder.body.load_state_dict(dict(zip(model.encoder.body.state_dict(),
                                                smp_fpn.encoder.model.state_dict().values(),
                                                strict=True)))
    theirs = {**smp_fpn.decoder.state_dict(), **smp_fpn.segmentation_head.state_dict()}
    model.decoder.load_state_dict({smp_fpn_key(k): v for k, v in theirs.items()})
    assert same_outputs(model, smp_fpn, 128, 160)


def taps(height: int, width: int, strides=STRIDES, channels=IN_CHANNELS, rounding=-1
         ) -> list[torch.Tensor]:
    """Random encoder taps for an image ``height x width``, each stage's size its finer
    one's halved and rounded up (rounding -1: padded convolutions), or down (1: ConvNeXt's
    patchify stem and downsampling layers)."""
    generator = torch.Generator().manual_seed(1)
    features, size, stride = [], (height, width), 1
    for c, s in zip(channels, strides, strict=True):
        size = tuple(rounding * (rounding * n // (s // stride)) for n in size)
        features.append(torch.randn(2, c, *size, generator=generator))
        stride = s
    return features


def decoder(name: str, upsampler: str, options: dict | None = None, **decoder_options
            ) -> nn.Module:
    """Decoder ``name`` for 4 classes (dysample's groups=4 variant divides them) with
    ``upsampler`` steps, built from one seed: upsamplers are built under their own RNG,
    so twins differ in their upsampling steps only."""
    torch.manual_seed(0)
    return DECODERS.build(name, in_channels=IN_CHANNELS, strides=STRIDES, num_classes=4,
                          upsampler=partial(build_upsampler, upsampler, **(options or {})),
                          **decoder_options).eval()


def fixed_twin(name: str, options: dict) -> str:
    """The fixed upsampler a learned one starts as: pixel shuffle (ICNR) and nearest
    resize-conv start as nearest, the others as bilinear."""
    if name in ("nearest", "pixel_shuffle") or options.get("mode") == "nearest":
        return "nearest"
    return "bilinear"


@pytest.mark.parametrize("name", ["unet", "fpn"])
@pytest.mark.parametrize(("upsampler", "options"), CASES, ids=CASE_IDS)
def test_every_upsampler_starts_as_its_fixed_twin_inside_the_decoder(name, upsampler, options
                                                                     ) -> None:
    features = taps(*IMAGE)
    with torch.no_grad():
        learned = decoder(name, upsampler, options)(features, IMAGE)
        fixed = decoder(name, fixed_twin(upsampler, options))(features, IMAGE)
    assert learned.shape == (2, 4, *IMAGE)
    assert torch.allclose(learned, fixed, atol=1e-5)


@pytest.mark.parametrize("name", ["unet", "fpn"])
def test_the_twin_test_sees_a_step_that_does_not_start_bilinear(name) -> None:
    features = taps(*IMAGE)
    with torch.no_grad():
        kaiming = decoder(name, "transposed", {"init": "kaiming"})(features, IMAGE)
        fixed = decoder(name, "bilinear")(features, IMAGE)
    assert not torch.allclose(kaiming, fixed, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_encoder() -> nn.Module:
    return build_encoder("simple", stem_width=8, widths=(8, 16, 24, 32), depths=(1, 1, 1, 1))


@pytest.mark.parametrize("name", ["unet", "fpn"])
@pytest.mark.parametrize("upsampler", sorted(UPSAMPLERS))
def test_a_training_step_with_every_upsampler(tiny_encoder, name: str, upsampler: str) -> None:
    model = build_model(tiny_encoder, partial(DECODERS.build, name), 3,
                        partial(build_upsampler, upsampler)).train()
    logits = model(torch.randint(0, 256, (2, 3, *IMAGE)).float())
    assert logits.shape == (2, 3, *IMAGE) and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.randint(0, 3, (2, *IMAGE))).backward()
    learning = [p for p in model.decoder.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in learning)
    model.zero_grad()


def recording(made: list[nn.Module], name: str):
    """An upsampler factory that keeps every step it makes in ``made``."""
    def factory(**arguments: object) -> nn.Module:
        made.append(build_upsampler(name, **arguments))
        return made[-1]
    return factory


@pytest.mark.parametrize(("name", "channels", "output_stride", "final_channels"), [
    ("unet", (256, 128, 64, 32, 16), 2, 32),  # ends at the input: the last block's step
    ("unet", (64, 32, 16, 8), 2, 3),  # ends at stride 2: a step on the class scores
    ("fpn", None, 4, 3),
])
def test_final_upsampler_makes_the_last_step_and_upsamplers_lists_every_step(
        name: str, channels, output_stride: int, final_channels: int) -> None:
    inner, final = [], []
    options = {"channels": channels} if channels else {}
    model = DECODERS.build(name, in_channels=IN_CHANNELS, strides=STRIDES, num_classes=3,
                           upsampler=recording(inner, "transposed"),
                           final_upsampler=recording(final, "bilinear"), **options)
    assert len(final) == 1 and isinstance(final[0], BilinearUpsampler)
    assert final[0].channels == final_channels
    steps = model.upsamplers()
    assert steps[-1] is final[0] and len(steps) == len(inner) + 1
    assert {id(step) for step in steps[:-1]} == {id(step) for step in inner}
    assert model.output_stride == output_stride
    assert model(taps(*IMAGE), IMAGE).shape == (2, 3, *IMAGE)


@pytest.mark.parametrize("name", ["unet", "fpn"])
@pytest.mark.parametrize(("strides", "rounding"), [
    ((4, 8, 8, 8), -1),  # a dilated encoder (ResNet's output_stride=8)
    ((4, 8, 16, 16), -1),  # ResNet's output_stride=16
    ((2, 4, 8, 16, 32), -1),  # a stride-2 tap first
    (STRIDES, 1),  # sizes rounded down, as ConvNeXt's stride-4 patchify stem
])
@pytest.mark.parametrize("image", [IMAGE, (97, 131)])
def test_any_encoders_taps_give_scores_at_the_input_size(name: str, strides, rounding,
                                                         image) -> None:
    channels = (4, *IN_CHANNELS)[-len(strides):]
    model = DECODERS.build(name, in_channels=channels, strides=strides, num_classes=3,
                           upsampler=partial(build_upsampler, "transposed"))
    features = taps(*image, strides=strides, channels=channels, rounding=rounding)
    assert model(features, image).shape == (2, 3, *image)


def test_a_stride_2_tap_is_a_timm_option_and_the_default_is_unchanged() -> None:
    default = build_encoder("timm", model_name=ENCODER)
    finer = build_encoder("timm", model_name=ENCODER, finest_stride=2)
    assert default.strides == (4, 8, 16, 32) and finer.strides == (2, 4, 8, 16, 32)
    assert finer.channels[1:] == default.channels
    assert [t.shape[-1] for t in finer(torch.randn(1, 3, 64, 64))] == [32, 16, 8, 4, 2]
    with pytest.raises(BadValue, match="model.encoder.finest_stride=8: use 4"):
        build_encoder("timm", model_name=ENCODER, finest_stride=8)


def test_what_the_decoders_cannot_build_is_one_line() -> None:
    with pytest.raises(BadValue, match="gives 6 U-Net blocks.*give 1 to 5 channels"):
        decoder("unet", "bilinear", channels=(8,) * 6)
    with pytest.raises(BadValue, match="segmentation_channels=100.*multiple of 32"):
        decoder("fpn", "bilinear", segmentation_channels=100)
