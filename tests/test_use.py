"""Using a trained model: seg-predict, evaluation modes (whole, sliding window,
multi-scale with flip) and ONNX export, all from the checkpoint alone."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from PIL import Image
from torch import nn

from seg.cli.command import CONFIG_MODULE
from seg.cli.eval import evaluate_checkpoint
from seg.cli.export import export
from seg.cli.predict import predict
from seg.models import DECODERS, UPSAMPLERS, build_encoder, build_model, build_upsampler
from seg.trained.inference import Inference, window_starts
from seg.trained.onnx import export_onnx


def compose_config(name: str, *overrides: str):
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


# -- predict ------------------------------------------------------------------------------


def test_predict_a_folder_of_mixed_sizes(checkpoint: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a": (64, 64), "b": (50, 70), "c": (64, 64), "d": (33, 47)}
    for stem, (height, width) in sizes.items():
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{stem}.{'png' if stem == 'b' else 'jpg'}")
    (images / "broken.jpg").write_bytes(b"not an image")
    (images / "notes.txt").write_text("not an image either, and not one by its name")

    output = tmp_path / "out"
    cfg = compose_config("predict", f"checkpoint={checkpoint}", f"input={images}",
                         f"output={output}", "batch_size=2", "progress=false")
    failed = predict(cfg)
    assert len(failed) == 1 and "broken.jpg" in failed[0]
    written = sorted(p.name for p in output.iterdir())
    assert written == sorted([f"{s}.png" for s in sizes] + [f"{s}_overlay.jpg" for s in sizes])
    state = torch.load(checkpoint, weights_only=True)
    for stem, (height, width) in sizes.items():
        labels = Image.open(output / f"{stem}.png")
        assert labels.mode == "P" and labels.size == (width, height)
        assert np.array(labels).max() < len(state["class_names"])
        assert labels.getpalette()[:6] == [c for colour in state["palette"][:2] for c in colour]
        overlay_width, overlay_height = Image.open(output / f"{stem}_overlay.jpg").size
        assert overlay_width >= width and overlay_height > height  # the legend is below


def test_predict_one_file_and_a_missing_input(checkpoint: Path, tmp_path: Path) -> None:
    image = tmp_path / "one.png"
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(image)
    cfg = compose_config("predict", f"checkpoint={checkpoint}", f"input={image}",
                         f"output={tmp_path / 'out'}", "progress=false", "inference=slide",
                         "inference.crop=32", "inference.stride=16")
    assert predict(cfg) == [] and (tmp_path / "out" / "one.png").is_file()
    missing = compose_config("predict", f"checkpoint={checkpoint}", f"input={tmp_path / 'no'}",
                             f"output={tmp_path / 'out'}")
    with pytest.raises(FileNotFoundError, match="input .* not found"):
        predict(missing)


def predict_config(checkpoint: Path, images: Path, output: Path, *overrides: str):
    return compose_config("predict", f"checkpoint={checkpoint}", f"input={images}",
                          f"output={output}", "progress=false", *overrides)


def random_images(folder: Path, *names: str) -> dict[str, bytes]:
    """Small random images under ``folder``; returns each file's bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(folder / name)
    return {name: (folder / name).read_bytes() for name in names}


def test_predict_never_writes_over_its_inputs(checkpoint: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    before = random_images(images, "a.png", "b.jpg")
    for output in (images, tmp_path / "images" / "."):
        with pytest.raises(ValueError, match="holds the input images"):
            predict(predict_config(checkpoint, images, output))
    with pytest.raises(ValueError, match="holds the input images"):
        predict(predict_config(checkpoint, images / "a.png", images))
    assert {name: (images / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in images.iterdir()) == ["a.png", "b.jpg"]


def test_predict_names_outputs_of_one_stem_apart(checkpoint: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    random_images(images, "x.jpg", "x.png", "y.png")
    assert predict(predict_config(checkpoint, images, tmp_path / "out")) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "x_jpg.png", "x_jpg_overlay.jpg", "x_png.png", "x_png_overlay.jpg", "y.png",
        "y_overlay.jpg"]
    random_images(images, "x_png.png")  # now x_png.png would be written twice
    with pytest.raises(ValueError, match="x.png and .*x_png.png would both write x_png.png"):
        predict(predict_config(checkpoint, images, tmp_path / "again"))


def test_predict_keeps_an_earlier_run_unless_told(checkpoint: Path, tmp_path: Path) -> None:
    images, output = tmp_path / "images", tmp_path / "out"
    random_images(images, "a.png")
    predict(predict_config(checkpoint, images, output))
    (output / "a.png").write_bytes(b"an earlier result")
    with pytest.raises(ValueError, match="already holds a.png of an earlier run"):
        predict(predict_config(checkpoint, images, output))
    assert (output / "a.png").read_bytes() == b"an earlier result"
    predict(predict_config(checkpoint, images, output, "overwrite=true"))
    assert Image.open(output / "a.png").mode == "P"


def test_predict_fails_when_a_write_fails(checkpoint: Path, tmp_path: Path,
                                          monkeypatch) -> None:
    images = tmp_path / "images"
    random_images(images, "a.png")

    def full_disk(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("seg.files.os.fsync", full_disk)
    with pytest.raises(ValueError, match="cannot write .*a.png .No space left on device; "):
        predict(predict_config(checkpoint, images, tmp_path / "out"))
    assert list((tmp_path / "out").iterdir()) == []  # no partial file, no temporary one
    monkeypatch.undo()
    file_output = tmp_path / "taken"
    file_output.write_text("a file")
    with pytest.raises(NotADirectoryError, match="output=.*taken is a file"):
        predict(predict_config(checkpoint, images, file_output))


def test_overlay_keeps_the_background_outlines_objects_and_has_a_legend() -> None:
    from seg.drawing import overlay_with_legend

    photo = np.random.default_rng(2).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    labels = np.zeros((60, 80), np.uint8)
    labels[20:40, 30:60] = 1  # one object
    labels[:5] = 255  # ignored pixels
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    result = overlay_with_legend(photo, labels, palette, ["background", "crack", "moss"], 0.5)

    height, width = labels.shape
    assert result.shape[0] > height and result.shape[1] >= width  # a legend strip below
    shown = result[:height, :width]
    untouched = (labels == 0) | (labels == 255)
    assert np.array_equal(shown[untouched], photo[untouched])  # not darkened at all
    assert tuple(shown[20, 45]) == (255, 0, 0)  # the object's top edge, full colour
    blended = (photo[30, 45] * 0.5 + palette[1] * 0.5).round()
    assert np.array_equal(shown[30, 45], blended)  # its inside, half colour
    legend = result[height:].reshape(-1, 3)
    assert (legend == palette[1]).all(1).any()  # the class shown has its swatch
    assert not (legend == palette[2]).all(1).any()  # an absent class has none


# -- inference modes ----------------------------------------------------------------------


def small_model(upsampler: str = "transposed") -> nn.Module:
    from functools import partial

    torch.manual_seed(0)
    encoder = build_encoder("simple", stem_width=8, widths=[8, 16, 16, 16], depths=[1, 1, 1, 1])
    model = build_model(encoder, partial(DECODERS.build, "fcn8s"), 3,
                        partial(build_upsampler, name=upsampler))
    for score in model.decoder.score:  # skips start at zero: give them weights to test
        nn.init.normal_(score.weight, std=0.1)
    with torch.no_grad():  # learned upsamplers start as bilinear: move them away from it
        for upsampler in model.upsamplers():
            for parameter in upsampler.parameters():
                parameter.add_(torch.randn_like(parameter), alpha=0.05)
    return model.eval()


def test_window_starts() -> None:
    assert window_starts(100, 128, 64) == [0]
    assert window_starts(100, 64, 32) == [0, 32, 36]
    assert window_starts(128, 64, 64) == [0, 64]


@torch.no_grad()
def test_slide_equals_whole_when_the_window_covers_the_image() -> None:
    model, images = small_model(), torch.randn(2, 3, 45, 61)
    whole = Inference()(model, images)
    assert torch.equal(Inference(mode="slide", crop=64, stride=32)(model, images), whole)
    windows = Inference(mode="slide", crop=(32, 40), stride=16)(model, images)
    assert windows.shape == whole.shape and torch.isfinite(windows).all()


@torch.no_grad()
def test_slide_averages_overlapping_windows() -> None:
    model = nn.Conv2d(3, 2, 1)  # pointwise: every window gives the same logits per pixel
    images = torch.randn(1, 3, 40, 50)
    slid = Inference(mode="slide", crop=24, stride=10)(model, images)
    assert torch.allclose(slid, model(images), atol=1e-6)


@torch.no_grad()
def test_multiscale_with_flip_averages_probabilities() -> None:
    model = nn.Conv2d(3, 4, 1)  # pointwise and mirror-symmetric
    images = torch.randn(2, 3, 32, 48)
    expected = model(images).softmax(1)
    flipped = Inference(flip=True)(model, images)
    assert torch.allclose(flipped, expected, atol=1e-6)
    scaled = Inference(scales=(0.5, 1.0, 2.0), flip=True)(model, images)
    assert scaled.shape == expected.shape
    assert torch.allclose(scaled.sum(1), torch.ones(2, 32, 48), atol=1e-5)


def test_eval_by_windows_covering_the_image_equals_whole(checkpoint: Path,
                                                         tmp_path: Path) -> None:
    results = {}
    for mode in ("whole", "slide"):
        cfg = compose_config("eval", f"checkpoint={checkpoint}", f"inference={mode}",
                             "inference.crop=256", "inference.stride=128", "device=cpu",
                             "batch_size=1") if mode == "slide" else compose_config(
            "eval", f"checkpoint={checkpoint}", "device=cpu", "batch_size=1")
        results[mode] = evaluate_checkpoint(cfg, tmp_path / mode)
    assert results["slide"]["confusion_matrix"] == results["whole"]["confusion_matrix"]
    table = json.loads((tmp_path / "slide" / "eval.json").read_text())
    assert set(table["per_class_iou"]) == set(torch.load(checkpoint, weights_only=True)
                                              ["class_names"])


def test_multiscale_eval_runs(checkpoint: Path, tmp_path: Path) -> None:
    cfg = compose_config("eval", f"checkpoint={checkpoint}", "inference=multiscale",
                         "inference.scales=[0.75,1.0]", "device=cpu")
    metrics = evaluate_checkpoint(cfg, tmp_path)
    assert 0.0 <= metrics["mIoU"] <= 1.0


# -- export -------------------------------------------------------------------------------


@pytest.mark.parametrize("upsampler", UPSAMPLERS)
def test_every_upsampler_exports_to_onnx(upsampler: str, tmp_path: Path) -> None:
    import onnxruntime

    model = small_model(upsampler)
    path = export_onnx(model, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 64, 64), (2, 3, 72, 104)):
        images = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = model(images).numpy()
        (logits,) = session.run(None, {"images": images.numpy()})
        assert logits.shape == expected.shape
        assert np.abs(logits - expected).max() <= 1e-4


def test_seg_export_writes_a_self_describing_file(checkpoint: Path, tmp_path: Path) -> None:
    import onnx

    cfg = compose_config("export", f"checkpoint={checkpoint}", f"output={tmp_path / 'm.onnx'}")
    path = export(cfg)
    metadata = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    state = torch.load(checkpoint, weights_only=True)
    assert metadata["class_names"] == state["class_names"] and metadata["mean"] == state["mean"]
    with pytest.raises(ValueError, match="format=tflite"):
        export(compose_config("export", f"checkpoint={checkpoint}", "format=tflite",
                              f"output={tmp_path / 'm.tflite'}"))


def perturbed_model(decoder: str, upsampler: str) -> nn.Module:
    """A small model with ``decoder`` whose every parameter is moved off its
    initialisation (zero-initialised skips and learned upsamplers that start as bilinear
    would otherwise hide a step the export gets wrong)."""
    from functools import partial

    torch.manual_seed(0)
    encoder = build_encoder("simple", stem_width=8, widths=[8, 16, 16, 16], depths=[1, 1, 1, 1])
    model = build_model(encoder, partial(DECODERS.build, decoder), 3,
                        partial(build_upsampler, name=upsampler))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter), alpha=0.05)
    return model.eval()


@pytest.mark.parametrize("upsampler", ["bilinear", "transposed", "carafe", "sapa", "fade"])
@pytest.mark.parametrize("decoder", ["unet", "fpn", "deeplabv3plus", "segformer", "fcn8s"])
def test_every_decoder_exports_to_onnx_at_odd_sizes(decoder: str, upsampler: str,
                                                   tmp_path: Path) -> None:
    import onnxruntime

    model = perturbed_model(decoder, upsampler)
    path = export_onnx(model, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 64, 64), (2, 3, 75, 101)):
        images = 255 * torch.rand(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = model(images).numpy()
        (logits,) = session.run(None, {"images": images.numpy()})
        assert logits.shape == expected.shape == (shape[0], 3, *shape[2:])
        assert np.abs(logits - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
