"""Encoders, decoders and upsamplers: shapes, initialisation and errors."""

from functools import partial

import pytest
import torch

from seg.errors import BadValue
from seg.models import DECODERS, ENCODERS, UPSAMPLERS, build_encoder, build_model, build_upsampler
from seg.models.encoders import VGG16Encoder

ODD_SIZES = [(97, 131), (33, 65)]


@pytest.fixture(scope="module", params=[*ENCODERS, "resnet50-os8"])
def encoder(request):
    name, _, stride = request.param.partition("-os")
    return build_encoder(name, **({"output_stride": int(stride)} if stride else {})).eval()


def decoder_cases() -> list[tuple[str, str]]:
    """FCN's decoders with every upsampler; the others (wider, so slower) with bilinear and
    a feature-guided one, whose guide's channels come from the encoder: every upsampler
    inside every decoder is tested on a small encoder (tests/test_decoders.py)."""
    return [(decoder, upsampler) for decoder in DECODERS
            for upsampler in (sorted(UPSAMPLERS) if decoder.startswith("fcn")
                              else ("bilinear", "fade"))]


@pytest.mark.parametrize(("variant", "upsampler"), decoder_cases())
def test_logits_come_out_at_the_input_size(encoder, variant: str, upsampler: str) -> None:
    model = build_model(encoder, partial(DECODERS.build, variant), 5,
                        partial(build_upsampler, upsampler)).eval()
    with torch.no_grad():
        for height, width in ODD_SIZES:
            logits = model(torch.randn(1, 3, height, width))
            assert logits.shape == (1, 5, height, width)
            assert torch.isfinite(logits).all()


def test_encoder_taps_match_declared_channels_and_strides() -> None:
    encoders = [build_encoder("simple"), build_encoder("resnet18"),
                build_encoder("resnet18", output_stride=8), VGG16Encoder(fc_channels=16)]
    for enc in encoders:
        taps = enc(torch.randn(1, 3, 64, 64))
        assert [t.shape[1] for t in taps] == list(enc.channels)
        assert [64 // t.shape[-1] for t in taps] == list(enc.strides)
        assert enc.strides[0] == 4  # every encoder offers FCN-4s its stride-4 tap


def test_fcn4s_refuses_what_it_cannot_fuse() -> None:
    encoder = build_encoder("simple")
    with pytest.raises(BadValue, match="fuses 4 encoder taps; this encoder has 3"):
        DECODERS.build("fcn4s", in_channels=encoder.channels[1:],
                       strides=encoder.strides[1:], num_classes=3)
    with pytest.raises(BadValue, match="skip_scaling"):
        DECODERS.build("fcn4s", in_channels=encoder.channels, strides=encoder.strides,
                       num_classes=3, skip_scaling=True)


def test_skip_score_layers_start_at_zero_so_skips_do_not_count_at_init() -> None:
    encoder = build_encoder("simple").eval()
    model = build_model(encoder, partial(DECODERS.build, "fcn4s"), 3,
                        partial(build_upsampler, "transposed")).eval()
    assert len(model.decoder.score) == 4
    for skip in model.decoder.score[:-1]:
        assert not skip.weight.any() and not skip.bias.any()
    with torch.no_grad():
        taps = encoder(torch.randn(1, 3, 64, 64))
        other_skips = [*(torch.randn_like(tap) for tap in taps[:-1]), taps[-1]]
        assert torch.equal(model.decoder(taps, (64, 64)), model.decoder(other_skips, (64, 64)))


def test_missing_imagenet_weights_name_the_expected_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"resnet18-[0-9a-f]+\.pth"):
        build_encoder("resnet18", weights="imagenet")


def test_weights_load_from_a_local_file(tmp_path) -> None:
    source = build_encoder("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    loaded = build_encoder("resnet18", weights=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_encoder("resnet18", weights=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize(("variant", "scales"), [("fcn8s", [0.0001, 0.01]), ("fcn16s", [0.01]),
                                                 ("fcn32s", [])])
def test_fcn_at_once_skip_scaling(variant: str, scales: list[float]) -> None:
    encoder = build_encoder("simple").eval()
    sizes = {"in_channels": encoder.channels, "strides": encoder.strides, "num_classes": 3}
    scaled = DECODERS.build(variant, **sizes, skip_scaling=True)
    assert scaled.skip_scales == scales
    assert DECODERS.build(variant, **sizes).skip_scales is None
    if not scales:
        return
    plain = DECODERS.build(variant, **sizes)
    plain.load_state_dict(scaled.state_dict())
    for skip in (*plain.score[:-1], *scaled.score[:-1]):
        torch.nn.init.ones_(skip.weight)
    with torch.no_grad():
        taps = encoder(torch.randn(1, 3, 64, 64))
        skips = taps[-len(plain.score):-1]
        taps_scaled = [tap * scale for tap, scale in zip(skips, scales, strict=True)]
        taps_scaled.append(taps[-1])
        assert torch.allclose(scaled(taps, (64, 64)), plain(taps_scaled, (64, 64)), atol=1e-5)


def test_the_timm_encoder_without_timm_is_one_line(monkeypatch) -> None:
    import sys

    from seg.errors import MissingPath
    from seg.models import build_encoder

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(MissingPath) as error:
        build_encoder("timm", model_name="resnet18")
    assert str(error.value) == ("model.encoder.name=timm needs the timm package: pip install "
                                "'seg[timm]' (make install installs it)")


def test_the_final_step_can_keep_a_fixed_upsampler_while_the_inner_ones_learn() -> None:
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from seg.cli.command import CONFIG_MODULE
    from seg.models.model import model_from_config
    from seg.models.upsamplers import BilinearUpsampler
    from seg.run_names import configuration

    with initialize_config_module(CONFIG_MODULE, version_base=None):
        cfg = compose("train", overrides=["model/decoder=fcn8s",
                                          "model/upsampler@model.final_upsampler=bilinear"])
    node = OmegaConf.to_container(cfg.model, resolve=True)
    model = model_from_config(node, num_classes=3, weights=False)
    *inner, final = model.decoder.upsamplers()
    assert isinstance(final, BilinearUpsampler)
    assert inner and not any(isinstance(step, BilinearUpsampler) for step in inner)
    assert configuration({"model": node})["final_upsampler"] == "bilinear"
    node["final_upsampler"] = None
    assert not isinstance(model_from_config(node, 3, weights=False).decoder.upsamplers()[-1],
                          BilinearUpsampler)
