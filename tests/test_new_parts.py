"""A new part is one module and one YAML file: a toy encoder, a toy decoder and a toy
dataset reader, defined in a module of their own outside seg and configured by YAML files
outside configs/, train, evaluate, predict and export through seg's own entry points."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from PIL import Image

from seg.cli.command import CONFIG_MODULE
from seg.cli.eval import evaluate_checkpoint
from seg.cli.export import export
from seg.cli.predict import predict
from seg.trained.checkpoint import load_trained, model_from_checkpoint
from seg.training import train

TOY_MODULE = '''
"""A toy encoder, decoder and dataset reader, each registered where it is defined."""

from pathlib import Path
from typing import Unpack

from torch import nn

from seg.data.base import ReadOptions, Sample, SegmentationDataset
from seg.data.readers import READERS
from seg.models.decoder import DECODERS, Decoder
from seg.models.encoders import ENCODERS, Encoder


@ENCODERS.register("toy")
class ToyEncoder(Encoder):
    """Four strided convolutions: taps at strides 4, 8, 16 and 32."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.channels, self.strides = (width,) * 4, (4, 8, 16, 32)
        self.stages = nn.ModuleList(
            nn.Conv2d(3 if i == 0 else width, width, 3, stride=4 if i == 0 else 2, padding=1)
            for i in range(4))

    def forward(self, x):
        taps = []
        for stage in self.stages:
            x = stage(x).relu()
            taps.append(x)
        return taps


@DECODERS.register("toy_head")
class ToyHead(Decoder):
    """The coarsest tap scored by a 1x1 conv, then one upsampling step to the input."""

    def __init__(self, in_channels, strides, num_classes, upsampler, hidden: int = 4) -> None:
        super().__init__()
        self.stride = strides[-1]
        self.score = nn.Sequential(nn.Conv2d(in_channels[-1], hidden, 1), nn.ReLU(),
                                   nn.Conv2d(hidden, num_classes, 1))
        self.up = upsampler(channels=num_classes, factor=self.stride)

    @property
    def output_stride(self):
        return self.stride

    def upsamplers(self):
        return [self.up]

    def forward(self, features, image_size):
        height, width = image_size
        return self.up(self.score(features[-1]))[:, :, :height, :width]


@READERS.register("toy_pngs")
class ToyPngs(SegmentationDataset):
    """ROOT/SPLIT/images/*.png with ROOT/SPLIT/masks/*.png of class indices."""

    classes = ("background", "square")

    def __init__(self, root: str, split: str, transform=None, num_classes: int = 2,
                 **options: Unpack[ReadOptions]) -> None:
        folder = Path(root) / split
        samples = [Sample(p.stem, p, folder / "masks" / p.name)
                   for p in sorted((folder / "images").glob("*.png"))]
        super().__init__(samples, num_classes, transform, source=str(folder), **options)
'''

ENCODER_YAML = """
name: toy
weights: null
width: 8
"""

DECODER_YAML = """
name: toy_head
hidden: 4
"""

DATASET_YAML = """
defaults:
  - /dataset_base@_here_
  - _self_

name: toy
root: ???
num_classes: 2
class_names: ${seg.class_names:toy_pngs}
crop_size: 32
scale_range: [1.0, 1.0]
train:
  reader: toy_pngs
val:
  reader: toy_pngs
"""


def write_squares(root: Path, split: str, count: int) -> None:
    rng = np.random.default_rng(len(split))
    for folder in ("images", "masks"):
        (root / split / folder).mkdir(parents=True)
    for index in range(count):
        mask = np.zeros((40, 40), np.uint8)
        top, left = rng.integers(0, 24, 2)
        mask[top:top + 16, left:left + 16] = 1
        image = np.stack([mask * 200 + rng.integers(0, 40, mask.shape, dtype=np.uint8)] * 3, -1)
        Image.fromarray(image.astype(np.uint8)).save(root / split / "images" / f"{index}.png")
        Image.fromarray(mask).save(root / split / "masks" / f"{index}.png")


def write_toy_parts(folder: Path) -> Path:
    """``folder/toy_parts.py`` and the config folder ``folder/configs`` with its YAML
    files; returns the config folder."""
    (folder / "toy_parts.py").write_text(textwrap.dedent(TOY_MODULE))
    configs = folder / "configs"
    (configs / "model" / "encoder").mkdir(parents=True)
    (configs / "model" / "decoder").mkdir()
    (configs / "dataset").mkdir()
    (configs / "model" / "encoder" / "toy.yaml").write_text(ENCODER_YAML)
    (configs / "model" / "decoder" / "toy_head.yaml").write_text(DECODER_YAML)
    (configs / "dataset" / "toy.yaml").write_text(DATASET_YAML)
    return configs


@pytest.fixture
def toy_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The toy module importable and imported (so its parts are registered), its YAML
    files in a config folder of their own; the catalogues as they were afterwards."""
    from seg.data.readers import READERS
    from seg.models import DECODERS, ENCODERS

    configs = write_toy_parts(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(ENCODERS, "entries", dict(ENCODERS.entries))
    monkeypatch.setattr(DECODERS, "entries", dict(DECODERS.entries))
    monkeypatch.setattr(READERS, "entries", dict(READERS.entries))
    importlib.import_module("toy_parts")
    yield configs
    sys.modules.pop("toy_parts", None)


def compose_config(name: str, *overrides: str):
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def test_a_toy_encoder_and_reader_train_reload_predict_and_export(
        toy_parts: Path, tmp_path: Path) -> None:
    data = tmp_path / "squares"
    write_squares(data, "train", 4)
    write_squares(data, "val", 2)
    cfg = compose_config("train", f"hydra.searchpath=[file://{toy_parts}]", "debug=tiny",
                         "dataset=toy", f"dataset.root={data}", "model/encoder=toy")
    train(cfg, tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "best.pt"

    state = load_trained(checkpoint)
    assert state["config"]["model"]["encoder"]["name"] == "toy"
    assert state["config"]["dataset"]["val"]["reader"] == "toy_pngs"
    model = model_from_checkpoint(state, checkpoint)
    assert type(model.encoder).__name__ == "ToyEncoder"

    metrics = evaluate_checkpoint(compose_config("eval", f"checkpoint={checkpoint}",
                                                 "device=cpu"), tmp_path / "eval")
    assert 0.0 <= metrics["mIoU"] <= 1.0
    assert predict(compose_config("predict", f"checkpoint={checkpoint}",
                                  f"input={data / 'val' / 'images'}",
                                  f"output={tmp_path / 'masks'}", "progress=false")) == []
    assert sorted(p.name for p in (tmp_path / "masks").glob("*.png")) == ["0.png", "1.png"]

    import onnxruntime

    path = export(compose_config("export", f"checkpoint={checkpoint}",
                                 f"output={tmp_path / 'toy.onnx'}"))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # images as decoded (0-255): the graph normalises them as seg-predict does
    images = torch.randint(0, 256, (1, 3, 64, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.eval()(images).numpy()  # the model normalises its input itself
    (logits,) = session.run(None, {"images": images.float().numpy()})
    assert np.abs(logits - expected).max() <= 1e-4


def run_command(name: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    """An installed console script, as a user runs it (the current folder is not on its
    sys.path: ``imports`` looks there itself)."""
    command = [str(Path(sys.executable).parent / name), *overrides]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)


def test_imports_brings_a_users_module_into_every_command(tmp_path: Path) -> None:
    write_toy_parts(tmp_path)
    write_squares(tmp_path / "squares", "train", 4)
    write_squares(tmp_path / "squares", "val", 2)
    trained = run_command("seg-train", "imports=[toy_parts]", "hydra.searchpath=[file://configs]",
                          "debug=tiny", "dataset=toy", "dataset.root=squares",
                          "model/encoder=toy", "hydra.run.dir=run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    checkpoint = "run/checkpoints/best.pt"

    # the checkpoint names the reader and the encoder, never the module that defines them
    refused = run_command("seg-eval", f"checkpoint={checkpoint}", "device=cpu", cwd=tmp_path)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "dataset.val.reader='toy_pngs': unknown dataset reader" in refused.stderr
    assert "(one of your own: pass imports=[ITS_MODULE])" in refused.stderr

    evaluated = run_command("seg-eval", "imports=[toy_parts]", f"checkpoint={checkpoint}",
                            "device=cpu", "output_dir=eval", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert (tmp_path / "eval" / "eval.json").is_file()

    missing = run_command("seg-eval", "imports=[no_such_parts]", f"checkpoint={checkpoint}",
                          cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr == (f"error: imports: no module no_such_parts here: put "
                              f"no_such_parts.py in the current folder ({tmp_path}) or on "
                              "PYTHONPATH, or install its package\n")


def test_a_toy_decoder_trains_reloads_predicts_and_exports_in_new_processes(
        tmp_path: Path) -> None:
    """The decoder contract (seg.models.decoder.Decoder) is all the model and the commands
    ask of a decoder: one module and one YAML, no edit to seg."""
    write_toy_parts(tmp_path)
    write_squares(tmp_path / "squares", "train", 4)
    write_squares(tmp_path / "squares", "val", 2)
    trained = run_command("seg-train", "imports=[toy_parts]", "hydra.searchpath=[file://configs]",
                          "debug=tiny", "dataset=toy", "dataset.root=squares",
                          "model/encoder=toy", "model/decoder=toy_head",
                          "model/upsampler=transposed", "hydra.run.dir=run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["configuration"]["decoder"] == "toy_head"
    assert metrics["upsampler_params"] > 0  # the toy's one step, a learned one
    checkpoint = "run/checkpoints/best.pt"
    for command, *overrides in (
            ("seg-eval", "device=cpu", "output_dir=eval"),
            ("seg-predict", "input=squares/val/images", "output=masks", "progress=false"),
            ("seg-export", "output=toy.onnx")):
        done = run_command(command, "imports=[toy_parts]", f"checkpoint={checkpoint}",
                           *overrides, cwd=tmp_path)
        assert done.returncode == 0, f"{command}: {done.stderr}"
    assert (tmp_path / "eval" / "eval.json").is_file()
    assert sorted(p.name for p in (tmp_path / "masks").glob("*.png")) == ["0.png", "1.png"]
    assert (tmp_path / "toy.onnx").stat().st_size > 0
