"""FPN decoder (Kirillov, Girshick, He and Dollar's panoptic FPN head, CVPR 2019) as
segmentation_models_pytorch (SMP 0.6) builds it: a feature pyramid from the encoder's last
four taps (1x1 lateral convs to ``pyramid_channels``, a top-down pathway of x2 steps each
added to the next finer lateral), then per level a segmentation block (3x3 conv-GN-ReLU
to ``segmentation_channels``, each followed by a x2 step, until the finest level's
stride, 4), the levels summed (SMP's default merge, "add"), dropout, a 1x1 conv to class
scores and a final x4 step to the input.

What differs from SMP, and why:

- Every resize is an upsampling step from the zoo: ``upsampler`` makes the top-down steps
  (SMP: nearest) and the segmentation blocks' steps (SMP: bilinear, ``align_corners=True``),
  ``final_upsampler`` the final x4 (SMP: bilinear, ``align_corners=True``). seg's fixed
  steps use ``align_corners=False``, the convention of every seg upsampler, so the
  parameters and shapes are SMP's but the values are not.
- Sizes not divisible by 32: SMP refuses them; here each enlarged map is cropped to the
  size of the encoder's tap it meets (FCN's crop) and the scores to the input's (after
  an encoder that rounds sizes down, a short map's last rows and columns are repeated:
  seg.models.decoder.fit_to).
- Taps at the same stride (a dilated encoder) are joined without a step, and a
  segmentation block has one conv-GN-ReLU per step it takes (at least one), where SMP's
  fixed three, two, one and none would not meet at stride 4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seg.errors import BadValue
from seg.models.blocks import initialise_as_smp
from seg.models.decoder import BILINEAR, DECODERS, Decoder, UpsamplerFactory, fit_to, make_step
from seg.models.upsamplers import upsample

PYRAMID_LEVELS = 4  # SMP's c2 to c5: the encoder's last four taps
GROUPS = 32  # SMP's group norm


def conv_gn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """SMP's Conv3x3GNReLU without its resize: 3x3 conv, group norm (32 groups), ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.GroupNorm(GROUPS, out_channels),
        nn.ReLU(inplace=True),
    )


def optional_step(factory: UpsamplerFactory, channels: int, factor: int,
                  guide_channels: int) -> nn.Module | None:
    """An upsampling step by ``factor``, or None where the maps already meet (factor 1)."""
    return make_step(factory, channels, factor, guide_channels) if factor > 1 else None


class SegmentationBlock(nn.Module):
    """One pyramid level to the finest level's stride: a 3x3 conv-GN-ReLU before each
    upsampling step (``steps[j]`` takes the map ``factors[j]`` times up to tap ``j``'s
    resolution, None where it is at that stride already), one conv where it takes none."""

    def __init__(self, in_channels: int, out_channels: int,
                 steps: Sequence[nn.Module | None], factors: Sequence[int]) -> None:
        super().__init__()
        self.targets = [j for j, step in enumerate(steps) if step is not None][::-1]
        self.steps = nn.ModuleList(steps[j] for j in self.targets)  # coarse to fine
        self.factors = [factors[j] for j in self.targets]
        widths = [in_channels] + [out_channels] * max(1, len(self.targets))
        self.convs = nn.ModuleList(conv_gn_relu(widths[i], widths[i + 1])
                                   for i in range(len(widths) - 1))

    def forward(self, x: torch.Tensor, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        if not self.targets:
            return self.convs[0](x)  # the finest level: one conv, no step
        for conv, step, factor, target in zip(self.convs, self.steps, self.factors,
                                              self.targets, strict=True):
            guide = taps[target]
            x = fit_to(upsample(step, conv(x), guide), *guide.shape[-2:], margin=factor)
        return x  # (B, C, H/s_0, W/s_0)


@DECODERS.register("fpn")
class FPNDecoder(Decoder):
    """SMP's FPN decoder and segmentation head on the encoder's last four taps (finest
    first): ``pyramid_channels``, ``segmentation_channels`` (a multiple of 32, for the
    group norm) and ``dropout`` as SMP's ``decoder_*``. Each ``upsampler`` step is guided by
    the encoder's tap at the resolution it goes to; ``final_upsampler`` makes the final
    step from the finest level (stride 4) to the input. Weights start as SMP's."""

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        upsampler: UpsamplerFactory = BILINEAR,
        final_upsampler: UpsamplerFactory | None = None,
        pyramid_channels: int = 256,
        segmentation_channels: int = 128,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if segmentation_channels % GROUPS:
            raise BadValue(f"model.decoder.segmentation_channels={segmentation_channels}: its "
                           f"group norm has {GROUPS} groups, use a multiple of {GROUPS}")
        self.levels = min(PYRAMID_LEVELS, len(in_channels))
        channels, self.strides = list(in_channels)[-self.levels:], list(strides)[-self.levels:]
        self.lateral = nn.ModuleList(nn.Conv2d(c, pyramid_channels, 1) for c in channels)
        factors = [self.ratio(j + 1, j) for j in range(self.levels - 1)]  # up to level j
        # top_down[j] takes level j + 1 to level j's resolution
        self.top_down = nn.ModuleList(
            optional_step(upsampler, pyramid_channels, factors[j], channels[j])
            for j in range(self.levels - 1))
        self.blocks = nn.ModuleList(
            SegmentationBlock(pyramid_channels, segmentation_channels, [
                optional_step(upsampler, segmentation_channels, factors[j], channels[j])
                for j in range(level)], factors)
            for level in range(self.levels))
        self.dropout = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(segmentation_channels, num_classes, 1)
        self.final = make_step(final_upsampler or upsampler, num_classes, self.strides[0])
        initialise_as_smp(kaiming=[self.lateral, *(block.convs for block in self.blocks)],
                          xavier=[self.head])

    def ratio(self, coarse: int, fine: int) -> int:
        """The factor from pyramid level ``coarse`` to level ``fine``."""
        return self.strides[coarse] // self.strides[fine]

    @property
    def output_stride(self) -> int:
        return self.strides[0]

    def upsamplers(self) -> list[nn.Module]:
        top_down = [step for step in self.top_down[::-1] if step is not None]
        blocks = [step for block in self.blocks[::-1] for step in block.steps]
        return [*top_down, *blocks, self.final]

    def forward(self, features: Sequence[torch.Tensor], image_size: tuple[int, int]
                ) -> torch.Tensor:
        taps = list(features)[-self.levels:]
        pyramid = [self.lateral[-1](taps[-1])]  # coarsest first: (B, P, H/32, W/32)
        for i in reversed(range(self.levels - 1)):
            lateral = self.lateral[i](taps[i])  # (B, P, H/s_i, W/s_i)
            coarser, step = pyramid[-1], self.top_down[i]
            if step is not None:
                coarser = fit_to(upsample(step, coarser, taps[i]), *lateral.shape[-2:],
                                 margin=self.ratio(i + 1, i))
            pyramid.append(coarser + lateral)
        merged = sum(block(level, taps)
                     for block, level in zip(self.blocks, pyramid[::-1], strict=True))
        scores = self.head(self.dropout(merged))  # (B, K, H/4, W/4)
        return fit_to(upsample(self.final, scores), *image_size, self.strides[0])  # (B, K, H, W)
