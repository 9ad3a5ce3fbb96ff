"""Every decoder downstream of training: a run with learned upsampling steps resumes,
reloads, evaluates, predicts and exports; TensorBoard shows its learned kernels; every
trainable parameter gets a gradient (DistributedDataParallel needs each one used)."""

from __future__ import annotations

import warnings
from functools import cache, partial
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from seg.cli.command import CONFIG_MODULE
from seg.cli.eval import evaluate_checkpoint
from seg.cli.export import export
from seg.cli.predict import predict
from seg.models import DECODERS, UPSAMPLERS, build_encoder, build_model, build_upsampler
from seg.trained.checkpoint import load_trained, model_from_checkpoint
from seg.training import train

NEW_DECODERS = ("unet", "fpn", "deeplabv3plus", "segformer")
UPSAMPLER_CONFIGS = Path(str(files("seg.configs") / "model" / "upsampler"))


def compose_config(name: str, *overrides: str):
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def kernel_images(run: Path) -> set[str]:
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(str(run / "tb"))
    accumulator.Reload()
    return {tag for tag in accumulator.Tags()["images"] if tag.startswith("upsampler/")}


@pytest.mark.parametrize("decoder", NEW_DECODERS)
def test_a_decoder_with_learned_steps_resumes_reloads_and_serves(
        decoder: str, compose_train, shapes_root: Path, tmp_path: Path) -> None:
    parts = (f"model/decoder={decoder}", "model/upsampler=transposed")
    run = tmp_path / "run"
    first = train(compose_train(*parts), run)
    assert first["iterations"] == 2 and first["configuration"]["decoder"] == decoder
    assert first["upsampler_params"] > 0
    resumed = train(compose_train(*parts, "trainer.max_iters=4", "trainer.resume=auto"), run)
    assert resumed["iterations"] == 4
    assert kernel_images(run)  # the transposed steps' kernels, as TensorBoard shows them

    checkpoint = run / "checkpoints" / "last.pt"
    model = model_from_checkpoint(load_trained(checkpoint), checkpoint).eval()
    assert type(model.decoder) is DECODERS.entry(decoder).builder
    metrics = evaluate_checkpoint(compose_config("eval", f"checkpoint={checkpoint}",
                                                 "device=cpu"), tmp_path / "eval")
    assert 0.0 <= metrics["mIoU"] <= 1.0
    images = shapes_root / "JPEGImages"
    assert predict(compose_config("predict", f"checkpoint={checkpoint}", f"input={images}",
                                  f"output={tmp_path / 'masks'}", "progress=false")) == []
    assert len(list((tmp_path / "masks").glob("*.png"))) == len(list(images.glob("*.jpg")))

    import onnxruntime

    with warnings.catch_warnings(record=True) as caught:  # seg-export prints none
        warnings.simplefilter("always")
        path = export(compose_config("export", f"checkpoint={checkpoint}",
                                     f"output={tmp_path / 'model.onnx'}"))
    shown = [str(warning.message) for warning in caught  # as Python shows a command's
             if not issubclass(warning.category, DeprecationWarning)]
    assert not shown
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pixels = 255 * torch.rand(1, 3, 53, 71, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(pixels).numpy()
    (logits,) = session.run(None, {"images": pixels.numpy()})
    assert np.abs(logits - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


@pytest.mark.parametrize("upsampler", sorted(UPSAMPLERS))
@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_every_trainable_parameter_gets_a_gradient(decoder: str, upsampler: str) -> None:
    torch.manual_seed(0)
    encoder = build_encoder("simple", stem_width=8, widths=[8, 16, 16, 16], depths=[1, 1, 1, 1])
    model = build_model(encoder, partial(DECODERS.build, decoder), 3,
                        partial(build_upsampler, upsampler)).train()
    logits = model(255 * torch.rand(2, 3, 45, 61))
    assert logits.shape == (2, 3, 45, 61)
    logits.square().mean().backward()
    unused = [name for name, parameter in model.named_parameters()
              if parameter.requires_grad and parameter.grad is None]
    assert not unused, f"{decoder} with {upsampler}: no gradient for {unused}"


# the upsamplers that do not start as a fixed resize, and why; every other one must
FIXED = {"bilinear", "nearest"}
NOT_FIXED_AT_INIT = {"transposed_kaiming": "the study's control: Kaiming's random start",
                     "sapa_free": "no parameters: sharpens across the guide's edges from the start"}


def fixed_twin(upsampler: str) -> str:
    """The fixed resize a learned upsampler starts as: pixel shuffle's sub-pixel
    convolution starts as nearest (ICNR), every other one as bilinear."""
    return "nearest" if upsampler_options(upsampler)["name"] == "pixel_shuffle" else "bilinear"


@cache
def upsampler_options(option: str) -> dict:
    """The upsampler a ``model/upsampler`` option names, and its options, as composed."""
    from omegaconf import OmegaConf

    node = compose_config("train", f"model/upsampler={option}").model.upsampler
    return OmegaConf.to_container(node, resolve=True)


def model_with(decoder: str, upsampler: str) -> torch.nn.Module:
    torch.manual_seed(0)  # upsamplers build under a forked RNG: the rest is the same
    encoder = build_encoder("simple", stem_width=8, widths=[8, 16, 16, 16], depths=[1, 1, 1, 1])
    return build_model(encoder, partial(DECODERS.build, decoder), 3,
                       partial(build_upsampler, **upsampler_options(upsampler))).eval()


def learned_upsamplers() -> list[str]:
    """Every option of ``model/upsampler`` but the fixed ones and those of
    :data:`NOT_FIXED_AT_INIT`."""
    options = {path.stem for path in UPSAMPLER_CONFIGS.glob("*.yaml")}
    return sorted(options - FIXED - set(NOT_FIXED_AT_INIT))


@pytest.mark.parametrize("upsampler", learned_upsamplers())
@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_every_learned_upsampler_starts_as_its_fixed_twin_in_every_decoder(
        decoder: str, upsampler: str) -> None:
    learned, fixed = model_with(decoder, upsampler), model_with(decoder, fixed_twin(upsampler))
    assert any(p.requires_grad for step in learned.upsamplers() for p in step.parameters()) \
        or upsampler in ("transposed_frozen", "sapa_free")
    # skips that start at zero (FCN's) would hide a step: give each zero weight outside
    # the upsamplers the same random values in both models
    in_steps = {id(p) for step in learned.upsamplers() for p in step.parameters()}
    twin = dict(fixed.named_parameters())
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in learned.named_parameters():
            if id(parameter) not in in_steps and not parameter.any():
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
                twin[name].copy_(parameter)
        images = 255 * torch.rand(2, 3, 75, 101, generator=generator)
        expected = fixed(images)
        assert torch.allclose(learned(images), expected, atol=1e-4 * expected.abs().max()), \
            f"{upsampler} inside {decoder} does not start as {fixed_twin(upsampler)}"


def upsampler_options_all() -> list[str]:
    return sorted(path.stem for path in UPSAMPLER_CONFIGS.glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("upsampler", upsampler_options_all())
@pytest.mark.parametrize("decoder", [*NEW_DECODERS, "fcn8s"])
def test_seg_train_trains_every_decoder_with_every_upsampler(
        decoder: str, upsampler: str, compose_train, tmp_path: Path) -> None:
    metrics = train(compose_train(f"model/decoder={decoder}", f"model/upsampler={upsampler}"),
                    tmp_path / "run")
    assert metrics["iterations"] == 2 and 0.0 <= metrics["mIoU"] <= 1.0
    assert metrics["configuration"]["upsampler"].split()[0] in (upsampler, *UPSAMPLERS)
