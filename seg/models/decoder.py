"""Decoders: the contract every decoder keeps (:class:`Decoder`), its catalogue, and the
FCN decoder, which scores the encoder's taps with 1x1 convs and fuses them coarse to fine.

FCN-32s upsamples the stride-32 scores straight to the input; FCN-16s first adds
the stride-16 skip scores; FCN-8s adds the stride-8 ones too (Long et al. 2015).
FCN-4s goes one step further than the paper, to the stride-4 tap: thin and small
objects (lines a few pixels wide) are finer than stride 8 can draw.
Every upsampling step is a pluggable upsampler built by ``upsampler(channels, factor)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from seg.catalogue import Catalogue
from seg.errors import BadValue
from seg.models.upsamplers import build_upsampler, upsample

DECODERS = Catalogue("decoder", given=("in_channels", "strides", "num_classes", "upsampler",
                                     "final_upsampler"))
UpsamplerFactory = Callable[..., nn.Module]
BILINEAR: UpsamplerFactory = partial(build_upsampler, "bilinear")


def make_step(factory: UpsamplerFactory, channels: int, factor: int,
              guide_channels: int | None = None) -> nn.Module:
    """One upsampling step of a decoder, from its ``upsampler`` (or ``final_upsampler``)
    factory: ``channels`` maps enlarged ``factor`` times. ``guide_channels``: the channels
    of the feature map the decoder has at the step's output resolution (the encoder's
    skip), which a feature-guided upsampler takes as its guide (seg.models.upsamplers
    .upsample); None where there is none, as for the last step to the image."""
    if guide_channels is None:
        return factory(channels=channels, factor=factor)
    return factory(channels=channels, factor=factor, guide_channels=guide_channels)


class Decoder(nn.Module):
    """What the model asks of a decoder, whatever its family. It is built by its catalogue
    (:data:`DECODERS`) from the encoder's ``in_channels`` and ``strides`` (its taps, finest
    first), the ``num_classes`` and an ``upsampler(channels=..., factor=...)`` factory that
    makes each of its upsampling steps, and it provides:

    - ``forward(features, image_size) -> logits (B, K, H, W)``: the taps to class scores
      at ``image_size`` (``(H, W)``), the input's size;
    - ``output_stride``: the stride of the finest map its last upsampling step enlarges;
    - ``upsamplers()``: its upsampling steps, coarse to fine (the study counts their
      parameters, hooks log their kernels).

    ``upsampler`` makes its steps inside the decoder, ``final_upsampler`` (None: the
    same) its last step, to the input's resolution; each step is built by
    :func:`make_step` and applied by ``seg.models.upsamplers.upsample``, which hands a
    feature-guided upsampler its guide.
    """

    def forward(self, features: Sequence[torch.Tensor], image_size: tuple[int, int]
                ) -> torch.Tensor:
        raise NotImplementedError

    @property
    def output_stride(self) -> int:
        raise NotImplementedError

    def upsamplers(self) -> list[nn.Module]:
        raise NotImplementedError


def crop_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Keep the top-left ``height x width`` of a map at least that large (FCN's crop)."""
    return x[:, :, :height, :width]


def fit_to(x: torch.Tensor, height: int, width: int, margin: int) -> torch.Tensor:
    """``x`` cropped to ``height x width``; where it is short, its last rows and columns
    first repeated ``margin`` times. An encoder that rounds sizes down leaves an enlarged
    map short of the finer one it meets: ConvNeXt's 4x4 stride-4 patchify stem gives
    floor(H/4) rows, x4 up to 3 short of the input, and its stages' floor(h/2), x2 one
    short of the skip (the up-step's factor bounds the shortfall). An exported graph
    always pads, as the shortfall depends on the input's size, which it does not fix."""
    if torch.onnx.is_in_onnx_export() or x.shape[-2] < height or x.shape[-1] < width:
        x = F.pad(x, (0, margin, 0, margin), mode="replicate")
    return crop_to(x, height, width)


@DECODERS.register("fcn4s", taps=4)
@DECODERS.register("fcn8s", taps=3)
@DECODERS.register("fcn16s", taps=2)
@DECODERS.register("fcn32s", taps=1)
class FCNDecoder(Decoder):
    """FCN-32s / 16s / 8s / 4s fusion head over taps ``[stride 4, 8, 16, 32]``: it fuses
    the last ``taps`` of them (the name fixes how many).

    ``skip_scaling`` multiplies the pool4 and pool3 skips by 0.01 and 0.0001 before
    scoring, as FCN's "at-once" training did. Skip score layers start at zero, so
    every variant starts out as FCN-32s.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        taps: int = 3,
        upsampler: UpsamplerFactory = BILINEAR,
        final_upsampler: UpsamplerFactory | None = None,
        skip_scaling: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 1 <= taps <= len(in_channels):
            raise BadValue(f"the decoder fuses {taps} encoder taps; this encoder has "
                           f"{len(in_channels)}: use a coarser decoder")
        if skip_scaling and taps > 3:
            raise BadValue("decoder.skip_scaling is FCN's at-once recipe, which has no "
                           "stride-4 skip: set it false or use fcn8s")
        self.strides = list(strides)[-taps:]  # coarse tap last
        channels = list(in_channels)[-taps:]
        # FCN "at-once": pool3 x 0.0001, pool4 x 0.01, aligned with the fused taps
        self.skip_scales = [0.0001, 0.01][3 - taps:] if skip_scaling else None
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.score = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in channels)
        for skip_score in self.score[:-1]:
            nn.init.zeros_(skip_score.weight)
            nn.init.zeros_(skip_score.bias)
        # fuse[i] takes the scores at strides[i + 1] up to strides[i], guided by tap i
        self.fuse = nn.ModuleList(
            make_step(upsampler, num_classes, self.strides[i + 1] // self.strides[i],
                      guide_channels=channels[i])
            for i in range(taps - 1)
        )
        self.final = make_step(final_upsampler or upsampler, num_classes, self.strides[0])

    @property
    def output_stride(self) -> int:
        return self.strides[0]

    def upsamplers(self) -> list[nn.Module]:
        return [*self.fuse[::-1], self.final]

    def forward(self, features: Sequence[torch.Tensor], image_size: tuple[int, int]
                ) -> torch.Tensor:
        height, width = image_size
        taps = list(features)[-len(self.score):]
        scores = self.score[-1](self.dropout(taps[-1]))  # (B, K, H/32, W/32)
        for i in reversed(range(len(self.fuse))):
            skip = taps[i] if self.skip_scales is None else taps[i] * self.skip_scales[i]
            skip_scores = self.score[i](skip)  # (B, K, H/s, W/s)
            upsampled = upsample(self.fuse[i], scores, taps[i])
            factor = self.strides[i + 1] // self.strides[i]
            scores = fit_to(upsampled, *skip_scores.shape[-2:], factor) + skip_scores
        return fit_to(upsample(self.final, scores), height, width, self.strides[0])  # (B, K, H, W)
