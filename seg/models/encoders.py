"""Encoders: backbones that expose feature taps at output strides 4, 8, 16 and 32.

Every encoder returns a list of four feature maps, shallow to deep (FCN-4s fuses all
four, FCN-8s the last three, FCN-32s the last), and carries ``channels`` and
``strides`` for them. With dilation (``output_stride`` 16 or 8)
the deeper taps keep a finer stride, and ``strides`` says so.

Each entry of :data:`ENCODERS` carries its :class:`Pretrained` record: where its published
weights come from, the normalisation they were trained with, and how their publisher
names their tensors. :func:`load_encoder_weights`, the one way weights reach an encoder,
reads only that record and the file it is given.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from seg.catalogue import NO_DEFAULT, Catalogue
from seg.errors import BadValue, MissingPath, UserError
from seg.files import read_run_file, read_run_text
from seg.models.normalise import IMAGENET_MEAN, IMAGENET_STD
from seg.settings import optional_package
from seg.text import printable, shown


class Encoder(nn.Module):
    """Base class: ``forward(x) -> [tap4, tap8, tap16, tap32]``, finest first, with their
    ``channels`` and ``strides`` (a dilated encoder's last strides are smaller). Its
    published weights, if any, are described by its entry's :class:`Pretrained` record."""

    channels: tuple[int, int, int, int]
    strides: tuple[int, int, int, int]


Tensors = dict[str, torch.Tensor]
Layout = Callable[[nn.Module, Tensors], Tensors]


def own_keys(encoder: nn.Module, state: Tensors) -> Tensors:
    """The layout of weights named as the encoder names its tensors: kept as they are."""
    return state


HF_HUB = "hf-hub:"  # a source in the Hugging Face hub cache: hf-hub:ORG/REPO/FILE


@dataclass(frozen=True)
class Pretrained:
    """An encoder entry's published weights and what they expect, as timm's
    ``pretrained_cfg`` and SMP's ``pretrained_settings`` say it: the ``record`` of each
    entry of :data:`ENCODERS` (or a function of the entry's options returning it, where
    they decide it: timm's ``model_name``). An entry without one publishes no weights and
    takes ImageNet's normalisation.

    ``sources``: where ``weights=imagenet`` finds the weights, in the order looked at,
    each in a cache on this machine that seg reads and never fills: a URL, which the
    torch hub cache holds as ``checkpoints/<its file name>``, or ``hf-hub:ORG/REPO/FILE``
    in the Hugging Face hub cache. ``title`` names them in messages; ``unavailable`` says
    why there are none, where it is not that the encoder has none.

    ``mean``, ``std``: the normalisation (RGB, fractions of 255) they were trained with,
    the dataset's by default (``${seg.encoder_mean:${model.encoder}}``).

    ``layout``: the publisher's tensor names as the encoder's (``layout(encoder, state)``);
    a file of the encoder's own names, as ``seg-pretrain`` writes, passes unchanged."""

    sources: tuple[str, ...] = ()
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    layout: Layout = own_keys
    title: str = ""
    unavailable: str = ""


# weights: None, "imagenet" (the entry's published weights, from a cache on disk, never
# downloaded) or a state-dict file
ENCODERS = Catalogue("encoder", extra_options={"weights": None})


def pretrained_of(name: str, options: Mapping[str, object]) -> Pretrained:
    """The :class:`Pretrained` record of encoder ``name`` with ``options`` (a
    ``model.encoder`` node's; an option it does not give takes its default)."""
    entry = ENCODERS.entry(name, "model.encoder")
    if entry.record is None or isinstance(entry.record, Pretrained):
        return entry.record or Pretrained()
    settings = {key: value for key, value in ENCODERS.options(name).items()
                if value is not NO_DEFAULT}
    settings.update((key, value) for key, value in options.items() if key in settings)
    return entry.record(**settings)


TORCHVISION_URL = "https://download.pytorch.org/models/"


def torchvision_imagenet(file: str, layout: Layout, title: str) -> Pretrained:
    """torchvision's ``IMAGENET1K_V1`` weights ``file``, with ImageNet's normalisation;
    named here rather than read from torchvision, whose import costs seconds
    (tests/test_normalise.py checks them against torchvision's own tables)."""
    return Pretrained(sources=(TORCHVISION_URL + file,), layout=layout,
                      title=f"torchvision's {title} ImageNet weights (IMAGENET1K_V1)")


def torchvision_models():
    """``torchvision.models``, imported on first use: importing torchvision pulls in
    torch._dynamo and costs every command about 3 s of start-up, models or not."""
    import torchvision.models

    return torchvision.models


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 convs with a shortcut (ResNet's basic block); ``stride`` 2 halves the size."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(in_channels, out_channels, stride),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


@ENCODERS.register("simple")
class SimpleEncoder(Encoder):
    """A small from-scratch residual CNN, fast on CPU: a stride-2 stem conv, then one
    stage per stride (4, 8, 16, 32) of ``depths[i]`` residual blocks of ``widths[i]``."""

    def __init__(
        self,
        stem_width: int = 24,
        widths: tuple[int, int, int, int] = (48, 96, 160, 256),
        depths: tuple[int, int, int, int] = (1, 2, 2, 2),
    ) -> None:
        super().__init__()
        stages, in_channels = [], stem_width
        for width, depth in zip(widths, depths, strict=True):
            blocks = [ResidualBlock(in_channels, width, stride=2)]
            blocks += [ResidualBlock(width, width) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = width
        self.stem = nn.Sequential(conv_bn_relu(3, stem_width, stride=2), stages[0], stages[1])
        self.stage16, self.stage32 = stages[2], stages[3]
        self.channels = tuple(widths)
        self.strides = (4, 8, 16, 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        conv, stage4, stage8 = self.stem  # one Sequential: the state-dict keys of before
        tap4 = stage4(conv(x))  # (B, widths[0], H/4, W/4)
        tap8 = stage8(tap4)  # (B, widths[1], H/8, W/8)
        tap16 = self.stage16(tap8)  # (B, widths[2], H/16, W/16)
        return [tap4, tap8, tap16, self.stage32(tap16)]  # last: (B, widths[3], H/32, W/32)


POOL2_END = 10  # VGG-16's features[:10] end with pool2 (stride 4, 128 channels)


def vgg_layout(encoder: nn.Module, state: Tensors) -> Tensors:
    """torchvision's VGG-16 keys as :class:`VGG16Encoder`'s: ``features.N`` split at pool3
    and pool4, fc6/fc7 (``classifier.0``, ``classifier.3``) reshaped into convolutions (FCN
    surgery) and the last classifier left out. With another ``fc_channels`` than VGG's
    4096, fc6 and fc7 keep their initialisation."""
    renamed = {vgg_feature_key(key): value for key, value in state.items()
               if not key.startswith("classifier.")}
    own_fc = {f"fc.{key}": value for key, value in encoder.fc.state_dict().items()}
    published_fc = {f"fc.{key[len('classifier.'):]}": value for key, value in state.items()
                    if key.startswith(("classifier.0.", "classifier.3."))}
    if not published_fc:
        return renamed
    if all(key in published_fc and published_fc[key].numel() == value.numel()
           for key, value in own_fc.items()):
        own_fc = {key: published_fc[key].reshape(value.shape) for key, value in own_fc.items()}
    return {**renamed, **own_fc}


@ENCODERS.register("vgg16",
                   record=torchvision_imagenet("vgg16-397923af.pth", vgg_layout, "VGG-16"))
class VGG16Encoder(Encoder):
    """FCN's original backbone: VGG-16 with pool2/pool3/pool4 taps and fc6/fc7 as
    convolutions."""

    def __init__(self, fc_channels: int = 4096, dropout: float = 0.5, output_stride: int = 32
                 ) -> None:
        super().__init__()
        if output_stride != 32:
            raise BadValue("vgg16 supports output_stride=32 only")
        features = torchvision_models().vgg16().features
        for layer in features:
            if isinstance(layer, nn.MaxPool2d):
                layer.ceil_mode = True  # as FCN's Caffe pools: no input row is dropped
        self.to_pool3 = features[:17]  # (B, 256, H/8, W/8)
        self.to_pool4 = features[17:24]  # (B, 512, H/16, W/16)
        self.to_pool5 = features[24:]  # (B, 512, H/32, W/32)
        self.fc = nn.Sequential(
            nn.Conv2d(512, fc_channels, 7, padding=3),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(fc_channels, fc_channels, 1),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.channels = (128, 256, 512, fc_channels)
        self.strides = (4, 8, 16, 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # to_pool3 stays one Sequential, so that checkpoints keep their keys
        pool2 = self.to_pool3[:POOL2_END](x)  # (B, 128, H/4, W/4)
        pool3 = self.to_pool3[POOL2_END:](pool2)
        pool4 = self.to_pool4(pool3)
        return [pool2, pool3, pool4, self.fc(self.to_pool5(pool4))]


# torchvision's vgg16().features as this encoder splits it (a slice of a Sequential keeps
# its layers' indices): layers [start, end) -> the Sequential that holds them
VGG_FEATURE_SLICES = ((0, 17, "to_pool3"), (17, 24, "to_pool4"), (24, 31, "to_pool5"))


def vgg_feature_key(key: str) -> str:
    """``features.N.rest`` under the Sequential of this encoder that holds layer N; any
    other key as it is (an unknown one is then named as such)."""
    prefix, _, rest = key.partition(".")
    index = rest.partition(".")[0]
    if prefix != "features" or not index.isdigit():
        return key
    for start, end, sequential in VGG_FEATURE_SLICES:
        if start <= int(index) < end:
            return f"{sequential}.{rest}"
    return key


def dilate_layer(layer: nn.Sequential, dilation: int) -> None:
    """Trade a ResNet stage's stride 2 for dilation, as DeepLab does (any block type)."""
    for module in layer.modules():
        if isinstance(module, nn.Conv2d):
            if module.stride == (2, 2):
                module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation = (dilation, dilation)
                module.padding = (dilation, dilation)


RESNET_STEM = {"conv1": "stem.0", "bn1": "stem.1", "layer1": "stem.4"}


def resnet_layout(encoder: nn.Module, state: Tensors) -> Tensors:
    """torchvision's ResNet keys as :class:`ResNetEncoder`'s: ``conv1``, ``bn1`` and
    ``layer1`` in its stem, the classifier ``fc`` left out; its own keys stay as they are."""
    renamed = {}
    for key, value in state.items():
        prefix, _, rest = key.partition(".")
        if prefix != "fc":
            renamed[f"{RESNET_STEM[prefix]}.{rest}" if prefix in RESNET_STEM else key] = value
    return renamed


@ENCODERS.register("resnet50", depth=50, record=torchvision_imagenet(
    "resnet50-0676ba61.pth", resnet_layout, "ResNet-50"))
@ENCODERS.register("resnet34", depth=34, record=torchvision_imagenet(
    "resnet34-b627a593.pth", resnet_layout, "ResNet-34"))
@ENCODERS.register("resnet18", depth=18, record=torchvision_imagenet(
    "resnet18-f37072fd.pth", resnet_layout, "ResNet-18"))
class ResNetEncoder(Encoder):
    """A torchvision ResNet with layer1 to layer4 taps; optional output stride 16 or 8."""

    def __init__(self, depth: int = 50, output_stride: int = 32) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise BadValue(f"output_stride must be 8, 16 or 32, got {output_stride}")
        net = getattr(torchvision_models(), f"resnet{depth}")()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.layer2, self.layer3, self.layer4 = net.layer2, net.layer3, net.layer4
        if output_stride <= 16:
            dilate_layer(self.layer4, 2 if output_stride == 16 else 4)
        if output_stride == 8:
            dilate_layer(self.layer3, 2)
        layers = (net.layer1, net.layer2, net.layer3, net.layer4)
        self.channels = tuple(block_out_channels(layer) for layer in layers)
        self.strides = (4, 8, min(16, output_stride), min(32, output_stride))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.stem(x)  # ends with layer1
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [c1, c2, c3, self.layer4(c3)]


def block_out_channels(layer: nn.Sequential) -> int:
    last_block = layer[-1]
    last_bn = last_block.bn3 if hasattr(last_block, "bn3") else last_block.bn2
    return last_bn.num_features


# -- where published weights lie: the caches on this machine, never a network --------------


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache as huggingface_hub finds it, read from the environment
    now (huggingface_hub reads it once, when it is imported)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.environ[variable])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hf_cached_file(repo_id: str, filename: str) -> Path | None:
    """``filename`` of Hugging Face repo ``repo_id`` in the hub cache's snapshot layout
    (``models--ORG--NAME/snapshots/REVISION/FILE``; the revision ``refs/main`` names
    first), or None. Only the disk is read."""
    repo = hf_hub_cache() / f"models--{repo_id.replace('/', '--')}"
    try:
        main = read_run_text(repo / "refs" / "main", "Hugging Face cache ref", 256).strip()
    except UserError:  # none (a file put there by hand), or not one huggingface_hub wrote
        main = ""
    snapshots = sorted((repo / "snapshots").glob(f"*/{filename}"),
                       key=lambda path: path.parent.name != main)
    return snapshots[0] if snapshots else None


def hf_source(source: str) -> tuple[str, str]:
    """``(repo_id, filename)`` of an ``hf-hub:ORG/REPO/FILE`` source."""
    org, repo, filename = source.removeprefix(HF_HUB).split("/", 2)
    return f"{org}/{repo}", filename


def cached_place(source: str) -> Path:
    """Where a :class:`Pretrained` source lies in its cache on this machine, or would."""
    if source.startswith(HF_HUB):
        repo_id, filename = hf_source(source)
        return (hf_cached_file(repo_id, filename)
                or hf_hub_cache() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
                / "main" / filename)
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(source).name


def download_address(source: str) -> str:
    """Where a user downloads a :class:`Pretrained` source from."""
    if source.startswith(HF_HUB):
        repo_id, filename = hf_source(source)
        return f"https://huggingface.co/{repo_id}/resolve/main/{filename}"
    return source


def published_file(pretrained: Pretrained, name: str) -> Path:
    """The first of ``pretrained.sources`` found on this machine (``weights=imagenet``);
    none: one line saying where to put it, for seg never downloads weights."""
    if not pretrained.sources:
        reason = pretrained.unavailable or f"the {name} encoder publishes no weights"
        raise BadValue(f"model.encoder.weights=imagenet: {reason}: set "
                       "model.encoder.weights=/path/to/weights, or weights=null")
    places = [cached_place(source) for source in pretrained.sources]
    found = next((place for place in places if place.exists()), None)
    if found is None:
        title = pretrained.title or f"the {name} encoder's weights"
        raise MissingPath(
            f"{title} are not cached on this machine (seg never downloads them): download "
            f"{download_address(pretrained.sources[0])} to {printable(places[0])}, or set "
            "model.encoder.weights=/path/to/weights (.pth or .safetensors, in the publisher's "
            "layout; scripts/prepare_weights.py converts published ones), or weights=null")
    return found


# -- the one way weights reach an encoder --------------------------------------------------

WEIGHTS_BYTES = 8 << 30  # the largest convolutional backbones' files are a few GB
SAFETENSORS_HEADER_BYTES = 100 << 20  # safetensors' own limit on its JSON header
# safetensors' dtypes and their sizes in bytes
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
                      "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1, "I16": 2, "U16": 2, "F16": 2,
                      "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
                      "C64": 8}
SAVE_HINT = ("save the model's state_dict() with torch.save or safetensors, or convert it "
             "with scripts/prepare_weights.py")


def read_weights_file(path: str | Path, what: str = "encoder weights file"
                      ) -> dict[str, torch.Tensor]:
    """The tensors of the weights file ``path`` (``what`` it is, for the messages), read as
    data: a regular file only (never a FIFO or a device), ``.safetensors`` with its header
    checked before it is decoded, anything else with ``torch.load(weights_only=True)``, so
    no pickle runs code; it must hold a mapping of names to tensors (a ``state_dict``,
    or one under ``state_dict`` or ``model``). Anything else is one line naming the file."""
    named = f"{what} {printable(path)}"
    content = read_run_file(path, what, WEIGHTS_BYTES)
    if Path(path).suffix == ".safetensors":
        state = safetensors_state(content, named)
    else:
        state = torch_state(content, named)
    return tensor_mapping(state, named)


def torch_state(content: bytes, named: str) -> object:
    """What ``torch.load(weights_only=True)`` reads from ``content``; torch's own advice
    (load it with weights_only=False, which would run whatever code it holds) is never
    passed on."""
    try:
        with warnings.catch_warnings():  # a pickle protocol torch did not write: one line
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's weights-only reader refused what it found
        raise BadValue(f"{named} is not a plain state dict of tensors (it would run code or "
                       "holds objects, which seg never loads, or it is no file torch.save "
                       f"wrote): {SAVE_HINT}") from None
    except Exception:  # noqa: BLE001 - whatever a damaged file makes torch raise, it is unusable
        raise BadValue(f"{named} cannot be read ({unreadable(content)}): {SAVE_HINT}") from None


def unreadable(content: bytes) -> str:
    return "the file is empty" if not content else ("it is truncated or damaged, or not a "
                                                    "file torch.save or safetensors wrote")


def safetensors_state(content: bytes, named: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, its header checked first (an 8-byte length, a
    JSON object within the file, each tensor's dtype, shape and offsets consistent with
    the bytes there)."""
    check_safetensors_header(content, named)
    safetensors_torch = optional_package("safetensors.torch", f"reading {named}",
                                         extra="timm")
    try:
        return safetensors_torch.load(content)
    except Exception as error:  # noqa: BLE001 - the Rust decoder's errors are one class
        raise BadValue(f"{named} is not a valid safetensors file "
                       f"({printable(str(error).splitlines()[0])}): {SAVE_HINT}") from None


def check_safetensors_header(content: bytes, named: str) -> None:
    def refuse(problem: str) -> BadValue:
        return BadValue(f"{named} is not a valid safetensors file ({problem}): {SAVE_HINT}")

    if len(content) < 8:
        raise refuse(f"{len(content)} bytes, fewer than its 8-byte header length")
    length = int.from_bytes(content[:8], "little")
    if length > min(len(content) - 8, SAFETENSORS_HEADER_BYTES):
        raise refuse(f"its header claims {length} bytes, the file holds {len(content) - 8}")
    try:
        header = json.loads(content[8:8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise refuse("its header is not JSON") from None
    if not isinstance(header, dict):
        raise refuse("its header is not a JSON object")
    data_bytes = len(content) - 8 - length
    for name, entry in header.items():
        if name != "__metadata__":
            problem = safetensors_entry_problem(entry, data_bytes)
            if problem:
                raise refuse(f"tensor {printable(name)!r}: {problem}")


def safetensors_entry_problem(entry: object, data_bytes: int) -> str | None:
    """What is wrong with one tensor's header entry, or None."""
    if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_DTYPES:
        return "no dtype safetensors knows"
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
        return "its shape is not a list of sizes"
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(type(n) is int for n in offsets) and 0 <= offsets[0] <= offsets[1]):
        return "its data_offsets are not [begin, end]"
    if offsets[1] > data_bytes:
        return f"its data ends at byte {offsets[1]}, past the {data_bytes} the file holds"
    if offsets[1] - offsets[0] != math.prod(shape) * SAFETENSORS_DTYPES[entry["dtype"]]:
        return f"{offsets[1] - offsets[0]} bytes for a {entry['dtype']} tensor of shape {shape}"
    return None


def tensor_mapping(state: object, named: str) -> dict[str, torch.Tensor]:
    """``state`` when it is a non-empty mapping of names to tensors (a ``state_dict``, or
    one held under ``state_dict`` or ``model``, as training scripts save them)."""
    if isinstance(state, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(state.get(wrapper), Mapping):
                state = state[wrapper]
                break
    if not isinstance(state, Mapping):
        raise BadValue(f"{named} holds a {type(state).__name__}, not a state dict (names "
                       f"to tensors): {SAVE_HINT}")
    if not state:
        raise BadValue(f"{named} holds no tensors: {SAVE_HINT}")
    for key, value in state.items():
        if (not isinstance(key, str) or not isinstance(value, torch.Tensor)
                or value.layout != torch.strided):
            raise BadValue(f"{named}: entry {shown(key)} holds a value of type "
                           f"{type(value).__name__}, not a tensor; a state dict holds only "
                           f"tensors: {SAVE_HINT}")
    return dict(state)


def check_weights_fit(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                      named: str) -> None:
    """One line naming the first tensor the encoder needs that ``state`` lacks, the first
    it holds that the encoder has no place for, or the first of another shape. A batch
    norm's ``num_batches_tracked`` may be absent (torchvision's files have none)."""
    missing = [key for key in own if key not in state
               and not key.endswith("num_batches_tracked")]
    if missing:
        raise BadValue(f"{named} lacks {len(missing)} of the encoder's {len(own)} tensors "
                       f"(first: {missing[0]}): pass weights of this encoder and its settings")
    unknown = [key for key in state if key not in own]
    if unknown:
        raise BadValue(f"{named} holds {printable(unknown[0])}, which this encoder has no "
                       "place for: pass weights of this encoder and its settings")
    wrong = [key for key in state if state[key].shape != own[key].shape]
    if wrong:
        raise BadValue(f"{named}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the "
                       f"encoder's {tuple(own[wrong[0]].shape)}: pass weights of this encoder "
                       "and its settings")


def load_encoder_weights(encoder: Encoder, path: str | Path,
                         pretrained: Pretrained | None = None) -> None:
    """Load the weights file ``path`` into ``encoder``: the one way weights reach any
    encoder, a path given or its published weights' file. The file is read as data
    (:func:`read_weights_file`), translated from its publisher's layout (``pretrained``,
    the encoder's record; none: the encoder's own names) and must then fit the encoder,
    tensor for tensor."""
    try:
        tensors = read_weights_file(path)
    except MissingPath as error:
        raise MissingPath(f"{error}: set model.encoder.weights to an existing file, to "
                          "imagenet, or to null (scripts/prepare_weights.py converts "
                          "published ones)") from None
    state = (pretrained or Pretrained()).layout(encoder, tensors)
    check_weights_fit(encoder.state_dict(), state, f"encoder weights file {printable(path)}")
    encoder.load_state_dict(state)


def build_encoder(name: str, weights: str | None = None, **options: object) -> Encoder:
    """Build the encoder registered as ``name`` with its constructor's ``options``;
    ``weights`` is None, "imagenet" (its record's published weights, from a cache on disk,
    never downloaded) or a path to a state dict (``.pth``, ``.pt`` or ``.safetensors``), in
    its publisher's layout (torchvision's, timm's) or the encoder's own (``seg-pretrain``'s
    ``encoder.pth``)."""
    encoder = ENCODERS.build(name, **options)
    if weights is None:
        return encoder
    pretrained = pretrained_of(name, options)
    path = published_file(pretrained, name) if weights == "imagenet" else weights
    load_encoder_weights(encoder, path, pretrained)
    return encoder
