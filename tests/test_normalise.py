"""One normalisation, from each encoder's pretrained record (issue 37): the dataset's mean
and std default to the encoder's, and seg-predict, the ONNX graph and the training loader
give the model the same float32 values, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf.errors import InterpolationResolutionError

from seg.cli.command import CONFIG_MODULE
from seg.data import transforms
from seg.models import ENCODERS
from seg.models.encoders import Pretrained, pretrained_of
from seg.models.normalise import IMAGENET_MEAN, IMAGENET_STD, Normalise
from seg.trained.checkpoint import load_trained, model_from_checkpoint
from seg.trained.inference import Inference
from seg.trained.prediction import Predictor

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ENCODER_CONFIGS = sorted(path.stem for path in (CONFIGS / "model" / "encoder").glob("*.yaml"))
STATISTICS = [(IMAGENET_MEAN, IMAGENET_STD), ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
              ((0.1, 0.7, 0.333), (0.05, 1.0, 0.3))]


def compose_train(*overrides: str):
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def every_pixel_value() -> np.ndarray:
    """A (256, 1, 3) uint8 image: each value 0-255 in each channel."""
    return np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2)


def as_batch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None]  # (1, 3, H, W)


@pytest.mark.parametrize(("mean", "std"), STATISTICS)
def test_the_module_gives_albumentations_values_bit_for_bit(mean, std) -> None:
    image = every_pixel_value()
    loader = A.Normalize(mean=mean, std=std)(image=image)["image"]  # (256, 1, 3) float32
    for batch in (as_batch(image), as_batch(image).float()):  # uint8, or float 0-255
        ours = Normalise(mean, std)(batch)[0].permute(1, 2, 0).numpy()
        assert ours.dtype == loader.dtype == np.float32
        assert np.array_equal(ours.view(np.uint32), loader.view(np.uint32))


def test_the_loaders_pipelines_normalise_as_the_module() -> None:
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    mask = np.zeros((40, 56), np.uint8)
    expected = Normalise((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))(as_batch(image))[0]
    validation = transforms.eval_transform(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    assert torch.equal(validation(image=image, mask=mask)["image"], expected)
    training = transforms.train_transform(
        (40, 56), scale_range=(1.0, 1.0), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
        hflip=0.0, color_jitter=0.0)
    assert torch.equal(training(image=image, mask=mask)["image"], expected)
    # the pipelines' defaults are the statistics of an encoder without published weights
    assert (transforms.IMAGENET_MEAN, transforms.IMAGENET_STD) == (IMAGENET_MEAN, IMAGENET_STD)
    assert Pretrained().mean == IMAGENET_MEAN and Pretrained().std == IMAGENET_STD


@pytest.mark.parametrize("option", ENCODER_CONFIGS)
def test_the_dataset_is_normalised_as_each_encoder_was_pretrained(option: str) -> None:
    """No encoder config writes outside its own node (``@package _global_``): the dataset's
    mean and std come from the encoder's record, unless set."""
    assert "@package" not in (CONFIGS / "model" / "encoder" / f"{option}.yaml").read_text()
    cfg = compose_train(f"model/encoder={option}")
    record = pretrained_of(cfg.model.encoder.name, cfg.model.encoder)
    assert list(cfg.dataset.mean) == list(record.mean)
    assert list(cfg.dataset.std) == list(record.std)
    chosen = compose_train(f"model/encoder={option}", "dataset.mean=[0.1,0.2,0.3]")
    assert list(chosen.dataset.mean) == [0.1, 0.2, 0.3]
    assert list(chosen.dataset.std) == list(record.std)


def test_the_normalisation_follows_the_encoder_whatever_chose_it() -> None:
    lite0 = compose_train("compare=imagenet")  # a preset that picks efficientnet_lite0
    assert list(lite0.dataset.mean) == [0.5, 0.5, 0.5] == list(lite0.dataset.std)
    # an encoder named on the command line alone, as a config group would name it
    assert list(compose_train("model.encoder.name=timm").dataset.mean) == [0.5, 0.5, 0.5]
    with pytest.raises(InterpolationResolutionError, match="unknown encoder"):
        list(compose_train("model.encoder.name=nope").dataset.mean)


def test_every_encoder_entry_has_its_record() -> None:
    for name in ENCODERS:
        assert isinstance(pretrained_of(name, {}), Pretrained), name


@pytest.mark.parametrize(("name", "weights"), [
    ("resnet18", "ResNet18_Weights"), ("resnet34", "ResNet34_Weights"),
    ("resnet50", "ResNet50_Weights"), ("vgg16", "VGG16_Weights")])
def test_the_torchvision_records_are_torchvisions_own(name: str, weights: str) -> None:
    import torchvision

    published = getattr(torchvision.models, weights).IMAGENET1K_V1
    record = pretrained_of(name, {})
    assert record.sources == (published.url,)
    preset = published.transforms()
    assert list(record.mean) == list(preset.mean) and list(record.std) == list(preset.std)


def test_timm_records_come_from_its_pretrained_cfg_offline() -> None:
    timm = pytest.importorskip("timm")
    record = pretrained_of("timm", {"model_name": "test_efficientnet"})
    published = timm.get_pretrained_cfg("test_efficientnet")
    assert record.mean == tuple(published.mean) and record.std == tuple(published.std)
    assert record.sources[0] == f"hf-hub:{published.hf_hub_id}/model.safetensors"
    default = pretrained_of("timm", {})  # the entry's default model, tf_efficientnet_lite0
    assert default.mean == (0.5, 0.5, 0.5) and default.sources
    unknown = pretrained_of("timm", {"model_name": "os.system"})  # refused when it is built
    assert unknown.sources == () and "no pretrained weights" in unknown.unavailable


def test_seg_predict_and_the_onnx_graph_normalise_as_seg_eval(
        checkpoint: Path, shapes_root: Path, tmp_path: Path) -> None:
    """An image through seg-eval's loader (albumentations), seg-predict's Predictor and
    seg-export's graph: the same normalised input, so the same classes and logits."""
    import onnx
    import onnxruntime

    from seg.cli.export import export
    from seg.data.decoding import read_image

    state = load_trained(checkpoint)
    model = model_from_checkpoint(state, checkpoint).eval()
    image = read_image(sorted((shapes_root / "JPEGImages").glob("*.jpg"))[0])
    loader = transforms.eval_transform(mean=state["mean"], std=state["std"])
    evaluated = loader(image=image, mask=np.zeros(image.shape[:2], np.uint8))["image"][None]
    with torch.no_grad():
        expected = model(evaluated)

    predictor = Predictor(state, torch.device("cpu"), Inference())
    assert torch.equal(predictor.normalise(as_batch(image)), evaluated)
    assert np.array_equal(predictor.labels([image]), expected.argmax(1).to(torch.uint8).numpy())

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name="export", overrides=[f"checkpoint={checkpoint}",
                                                        f"output={tmp_path / 'm.onnx'}"])
    path = export(cfg)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": as_batch(image).float().numpy()})
    assert np.abs(logits - expected.numpy()).max() <= 1e-4
    metadata = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert metadata["mean"] == state["mean"] and "0-255" in metadata["input"]
