"""The layers the decoders beyond FCN share (U-Net, FPN, DeepLabV3+, SegFormer): where
they fuse, their conv-BN-ReLU, and segmentation_models_pytorch's initialisation, so that
each starts where the peer's does."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from seg.errors import BadValue

SKIP_STRIDE = 4  # the finest tap these decoders fuse at, and the final step's factor


def skip_tap(strides: Sequence[int], decoder: str) -> int:
    """The index of the encoder's stride-4 tap (an encoder may give a finer one first);
    a one-line error naming the decoder where there is none."""
    if SKIP_STRIDE not in strides:
        raise BadValue(f"model.decoder.name={decoder} fuses at stride {SKIP_STRIDE}; this "
                       f"encoder's taps are at strides {tuple(strides)}: use an encoder "
                       f"with a stride-{SKIP_STRIDE} tap")
    return list(strides).index(SKIP_STRIDE)


def initialise_as_smp(kaiming: Iterable[nn.Module], xavier: Iterable[nn.Module]) -> None:
    """SMP's initialisation (its base.initialization), so that a decoder starts where the
    peer's does: convolutions in ``kaiming`` Kaiming-uniform (fan-in, ReLU), those in
    ``xavier`` (SMP's heads and linear layers) Xavier-uniform, biases zero, batch norms at
    1 and 0. Upsampling steps are never passed: they start as their fixed twin."""
    for init, modules in ((kaiming_uniform, kaiming), (nn.init.xavier_uniform_, xavier)):
        for module in (m for top in modules for m in top.modules()):
            if isinstance(module, nn.Conv2d):
                init(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def kaiming_uniform(weight: torch.Tensor) -> None:
    nn.init.kaiming_uniform_(weight, mode="fan_in", nonlinearity="relu")


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1,
                 dilation: int = 1, separable: bool = False) -> nn.Sequential:
    """A conv at ``dilation``, BN, ReLU, as SMP's blocks (no bias before the norm);
    ``separable``: the conv is a depthwise ``kernel_size`` conv then a 1x1 pointwise one."""
    padding = dilation * (kernel_size // 2)
    if separable:
        conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding,
                      dilation=dilation, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )
    else:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding,
                         dilation=dilation, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
