"""U-Net decoder (Ronneberger, Fischer and Brox, MICCAI 2015) as segmentation_models_pytorch
(SMP 0.6) builds it: from the encoder's coarsest tap, one block per finer resolution,
each an upsampling step, the encoder's skip at that resolution concatenated, and two 3x3
conv-BN-ReLU; past the encoder's finest tap the blocks have no skip and go on halving the
stride down to the input's resolution; a 3x3 conv to class scores at the end.

The blocks, coarse to fine, are SMP's: one per encoder tap below the coarsest (a dilated
tap at the same stride as the one before it gets a block with no upsampling, as SMP's
resize to the same size), then one per halving of the stride to 1. With the default five
``channels`` and taps at strides 4 to 32, the blocks end at stride 4, 2 and 1, the last two
without skip; SMP's encoders also give a stride-2 feature, which its block to stride 2
concatenates: seg's timm encoder gives one with ``finest_stride: 2``, and then the decoder
has exactly SMP's parameters (``model/upsampler=nearest`` is SMP's default up-step).

Which step ``final_upsampler`` makes: always the last step to the input's resolution.
Where the blocks end at stride 1 (the default), that is the last block's up-step, on
``channels[-1]`` feature maps (stride 2 to 1), and the head then scores at full
resolution; ``output_stride`` is 2. With fewer ``channels`` than blocks to the input, the
head scores at the last block's stride and the final step enlarges the class scores to
the input. Either way ``model/upsampler@model.final_upsampler=bilinear`` keeps that last
step fixed while the inner ones learn.

Sizes not divisible by 32: each upsampled map is cropped to its skip's size (FCN's crop),
where SMP resizes to it; the shapes are SMP's, values near the bottom and right borders
differ from SMP's nearest resize. Blocks past the finest tap are not cropped until the
end, where the scores are cropped to the input's size. After an encoder that rounds
sizes down (ConvNeXt's patchify stem) an enlarged map may be short of its skip or of the
input: its last rows and columns are repeated (:func:`fit_to`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seg.errors import BadValue
from seg.models.blocks import initialise_as_smp
from seg.models.decoder import BILINEAR, DECODERS, Decoder, UpsamplerFactory, fit_to, make_step
from seg.models.encoders import conv_bn_relu
from seg.models.upsamplers import upsample

UNET_CHANNELS = (256, 128, 64, 32, 16)  # SMP's decoder_channels


def block_targets(strides: Sequence[int], blocks: int) -> list[tuple[int, int | None]]:
    """``(stride, skip)`` of each of ``blocks`` U-Net blocks, coarse to fine: the stride it
    upsamples to and the index of the encoder's tap there (None: no skip). One block per
    tap below the coarsest (SMP's), then one per halving of the stride down to 1."""
    targets: list[tuple[int, int | None]] = [(strides[i], i)
                                             for i in reversed(range(len(strides) - 1))]
    stride = strides[0]
    while stride > 1:
        stride //= 2
        targets.append((stride, None))
    if not 1 <= blocks <= len(targets):
        raise BadValue(f"model.decoder.channels gives {blocks} U-Net blocks; from this "
                       f"encoder's taps at strides {tuple(strides)} there are "
                       f"{len(targets)} down to the input: give 1 to {len(targets)} channels")
    return targets[:blocks]


class UNetBlock(nn.Module):
    """One decoder block: ``step`` up ``factor`` times to the next resolution (None where
    the skip is at the same stride), the encoder's skip there concatenated (if any), two
    3x3 conv-BN-ReLU."""

    def __init__(self, step: nn.Module | None, factor: int, in_channels: int,
                 skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.step, self.factor = step, factor
        self.convs = nn.Sequential(conv_bn_relu(in_channels + skip_channels, out_channels),
                                   conv_bn_relu(out_channels, out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        if self.step is not None:
            x = upsample(self.step, x, skip)
        if skip is not None:
            x = fit_to(x, *skip.shape[-2:], margin=self.factor)
            x = torch.cat([x, skip], dim=1)  # (B, C + C_skip, h, w)
        return self.convs(x)


@DECODERS.register("unet")
class UNetDecoder(Decoder):
    """SMP's U-Net decoder and segmentation head on the encoder's taps (finest first):
    one block per entry of ``channels`` (their widths, coarse to fine, SMP's
    ``decoder_channels``), each ``upsampler`` step guided by the skip it is concatenated
    with; ``final_upsampler`` makes the last step to the input (see the module's
    docstring). Weights start as SMP's (its initialisation)."""

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        upsampler: UpsamplerFactory = BILINEAR,
        final_upsampler: UpsamplerFactory | None = None,
        channels: tuple[int, ...] = UNET_CHANNELS,
    ) -> None:
        super().__init__()
        self.targets = block_targets(strides, len(channels))
        self.margin = strides[0]  # what fit_to may pad: less than the finest tap's stride
        ends_at_input = self.targets[-1][0] == 1
        widths = [in_channels[-1], *channels]
        previous = [strides[-1]] + [stride for stride, _ in self.targets[:-1]]
        self.blocks = nn.ModuleList()
        for i, ((stride, skip), before) in enumerate(zip(self.targets, previous, strict=True)):
            last_to_input = ends_at_input and i == len(self.targets) - 1
            factory = (final_upsampler or upsampler) if last_to_input else upsampler
            skip_channels = 0 if skip is None else in_channels[skip]
            factor = before // stride
            step = (make_step(factory, widths[i], factor, skip_channels or None)
                    if factor > 1 else None)
            self.blocks.append(UNetBlock(step, factor, widths[i], skip_channels, widths[i + 1]))
        self.head = nn.Conv2d(channels[-1], num_classes, 3, padding=1)
        end_stride = self.targets[-1][0]
        self.final = (None if ends_at_input else
                      make_step(final_upsampler or upsampler, num_classes, end_stride))
        # the stride of the map the last step to the input enlarges
        self.final_from = previous[-1] if ends_at_input else end_stride
        initialise_as_smp(kaiming=[block.convs for block in self.blocks], xavier=[self.head])

    @property
    def output_stride(self) -> int:
        return self.final_from

    def upsamplers(self) -> list[nn.Module]:
        steps = [block.step for block in self.blocks if block.step is not None]
        return steps + ([self.final] if self.final is not None else [])

    def forward(self, features: Sequence[torch.Tensor], image_size: tuple[int, int]
                ) -> torch.Tensor:
        x = features[-1]  # (B, C, H/32, W/32)
        for block, (_, skip) in zip(self.blocks, self.targets, strict=True):
            x = block(x, None if skip is None else features[skip])  # (B, C_i, H/s_i, W/s_i)
        scores = self.head(x)  # (B, K, H/s, W/s)
        if self.final is not None:
            scores = upsample(self.final, scores)
        return fit_to(scores, *image_size, self.margin)  # (B, K, H, W)
