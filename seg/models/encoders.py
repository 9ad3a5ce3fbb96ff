"""Encoders: backbones that expose feature taps at output strides 4, 8, 16 and 32.

Every encoder returns a list of four feature maps, shallow to deep (FCN-4s fuses all
four, FCN-8s the last three, FCN-32s the last), and carries ``channels`` and
``strides`` for them. With dilation (``output_stride`` 16 or 8)
the deeper taps keep a finer stride, and ``strides`` says so.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from seg.catalogue import Catalogue
from seg.errors import BadValue, MissingPath


class Encoder(nn.Module):
    """Base class: ``forward(x) -> [tap4, tap8, tap16, tap32]``, finest first, with their
    ``channels`` and ``strides`` (a dilated encoder's last strides are smaller)."""

    channels: tuple[int, int, int, int]
    strides: tuple[int, int, int, int]


# weights: None, "imagenet" (torchvision's, from the torch hub cache) or a state-dict file
ENCODERS = Catalogue("encoder", extra_options={"weights": None})


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


@ENCODERS.register("vgg16", extras={"imagenet": "VGG16_Weights"})
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

    def load_published_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load torchvision VGG-16 weights, reshaping fc6/fc7 into convolutions (FCN surgery)."""
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        nn.Sequential(*self.to_pool3, *self.to_pool4, *self.to_pool5).load_state_dict(features)
        fc6, fc7 = self.fc[0], self.fc[3]
        if fc6.out_channels == state["classifier.0.weight"].shape[0]:
            with torch.no_grad():
                fc6.weight.copy_(state["classifier.0.weight"].view_as(fc6.weight))
                fc6.bias.copy_(state["classifier.0.bias"])
                fc7.weight.copy_(state["classifier.3.weight"].view_as(fc7.weight))
                fc7.bias.copy_(state["classifier.3.bias"])


def dilate_layer(layer: nn.Sequential, dilation: int) -> None:
    """Trade a ResNet stage's stride 2 for dilation, as DeepLab does (any block type)."""
    for module in layer.modules():
        if isinstance(module, nn.Conv2d):
            if module.stride == (2, 2):
                module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation = (dilation, dilation)
                module.padding = (dilation, dilation)


@ENCODERS.register("resnet50", extras={"imagenet": "ResNet50_Weights"}, depth=50)
@ENCODERS.register("resnet34", extras={"imagenet": "ResNet34_Weights"}, depth=34)
@ENCODERS.register("resnet18", extras={"imagenet": "ResNet18_Weights"}, depth=18)
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

    def load_published_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load torchvision ResNet weights (the classifier ``fc.*`` is dropped)."""
        renamed = {}
        for key, value in state.items():
            prefix = key.split(".")[0]
            if prefix == "fc":
                continue
            if prefix in ("conv1", "bn1"):
                key = f"stem.{0 if prefix == 'conv1' else 1}.{key.split('.', 1)[1]}"
            elif prefix == "layer1":
                key = f"stem.4.{key.split('.', 1)[1]}"
            renamed[key] = value
        self.load_state_dict(renamed)


def block_out_channels(layer: nn.Sequential) -> int:
    last_block = layer[-1]
    last_bn = last_block.bn3 if hasattr(last_block, "bn3") else last_block.bn2
    return last_bn.num_features


def imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for ``name`` from the torch hub cache, never downloaded."""
    weights = getattr(torchvision_models(), ENCODERS.entry(name).extras["imagenet"]).IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file():
        raise MissingPath(
            f"ImageNet weights for {name} are not in the torch hub cache: download {weights.url} "
            f"to {cached}, or set model.encoder.weights=/path/to/file.pth (or weights=null)"
        )
    return torch.load(cached, map_location="cpu", weights_only=True)


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise MissingPath(
            f"encoder weights file {path} not found: set model.encoder.weights to an existing "
            "file, to imagenet, or to null (scripts/prepare_weights.py converts published ones)"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # timm's format; safetensors comes with timm

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state.get("model", state))


def build_encoder(name: str, weights: str | None = None, **options: object) -> Encoder:
    """Build the encoder registered as ``name`` with its constructor's ``options``;
    ``weights`` is None, "imagenet" or a path to a state dict (``.pth``, or
    ``.safetensors``).

    A path holds either its publisher's layout (torchvision's, as the hub cache does;
    timm's) or this encoder's own ``state_dict``.
    """
    if weights == "imagenet" and "imagenet" not in ENCODERS.entry(name).extras:
        raise BadValue(f"the {name} encoder has no ImageNet weights: set weights=null")
    encoder = ENCODERS.build(name, **options)
    if weights is None:
        return encoder
    if weights != "imagenet":
        state = load_state_file(weights)
    elif hasattr(encoder, "imagenet_state"):  # an encoder with weights of its own kind (timm)
        state = encoder.imagenet_state()
    else:
        state = imagenet_state_dict(name)
    if set(state) <= set(encoder.state_dict()):
        encoder.load_state_dict(state)
    else:
        encoder.load_published_state(state)
    return encoder
