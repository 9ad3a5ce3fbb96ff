"""One normalisation, from each encoder's pretrained record (issue 37), inside the model:
the dataset's mean and std default to the encoder's; training, seg-eval, seg-predict and
the ONNX graph hand the model pixels as decoded, and it normalises them bit for bit as
albumentations' Normalize does."""

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


def test_the_loaders_give_the_model_pixels_as_decoded() -> None:
    """Training's crops are uint8, evaluation's images float32, both the decoded values: the
    model normalises them (its first step, the module above)."""
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    mask = np.zeros((40, 56), np.uint8)
    validation = transforms.eval_transform(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    evaluated = validation(image=image, mask=mask)["image"]
    assert evaluated.dtype == torch.float32 and torch.equal(evaluated, as_batch(image)[0].float())
    training = transforms.train_transform((40, 56), scale_range=(1.0, 1.0), hflip=0.0,
                                          color_jitter=0.0)
    trained = training(image=image, mask=mask)["image"]
    assert trained.dtype == torch.uint8 and torch.equal(trained, as_batch(image)[0])
    # the pipelines' defaults are the statistics of an encoder without published weights
    assert (transforms.IMAGENET_MEAN, transforms.IMAGENET_STD) == (IMAGENET_MEAN, IMAGENET_STD)
    assert Pretrained().mean == IMAGENET_MEAN and Pretrained().std == IMAGENET_STD


@pytest.mark.parametrize(("mean", "std"), STATISTICS)
def test_padding_is_the_colour_that_normalises_to_zero(mean, std) -> None:
    """Evaluation pads to a multiple, and a batch of mixed sizes, with the mean colour:
    normalised, exactly 0, as padding after an albumentations Normalize was."""
    from seg.data.loader import collate
    from seg.data.pixels import mean_colour

    image = np.full((5, 6, 3), 200, np.uint8)
    mask = np.zeros((5, 6), np.uint8)
    padded = transforms.eval_transform(mean, std, pad_to_multiple=8)(image=image, mask=mask)
    assert torch.equal(Normalise(mean, std)(padded["image"][None])[0, :, 5:, 6:],
                       torch.zeros(3, 3, 2))
    small = transforms.eval_transform(mean, std)(image=image, mask=mask)
    large = transforms.eval_transform(mean, std)(image=np.zeros((7, 6, 3), np.uint8),
                                                 mask=np.zeros((7, 6), np.uint8))
    batch = collate([{**small, "id": "a"}, {**large, "id": "b"}],
                    image_fill=mean_colour(mean, std))
    assert torch.equal(Normalise(mean, std)(batch["image"])[0, :, 5:], torch.zeros(3, 2, 6))


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
    """An image through seg-eval's loader, seg-predict's Predictor and seg-export's graph:
    each hands the model the pixels as decoded and the model normalises them, bit for bit
    as albumentations' Normalize; the same classes and logits."""
    import onnx
    import onnxruntime

    from seg.cli.export import export
    from seg.data.decoding import read_image

    state = load_trained(checkpoint)
    model = model_from_checkpoint(state, checkpoint).eval()
    image = read_image(sorted((shapes_root / "JPEGImages").glob("*.jpg"))[0])
    loader = transforms.eval_transform(mean=state["mean"], std=state["std"])
    evaluated = loader(image=image, mask=np.zeros(image.shape[:2], np.uint8))["image"][None]
    normalised = A.Normalize(mean=state["mean"], std=state["std"])(image=image)["image"]
    assert torch.equal(model.normalise(evaluated)[0], as_batch(normalised)[0])
    with torch.no_grad():
        expected = model(evaluated)

    predictor = Predictor(state, torch.device("cpu"), Inference())
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
