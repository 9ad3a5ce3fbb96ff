"""SegFormer's all-MLP decoder head (Xie, Wang, Yu, Anandkumar, Alvarez and Luo,
"SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers",
NeurIPS 2021), as segmentation_models_pytorch (SMP 0.6) builds it: each level a linear
layer (a 1x1 conv with bias) to one width, brought to stride 4 by its own upsampling step,
the levels concatenated coarsest first, fused by a 1x1 conv-BN-ReLU, a 1x1 head to class
scores and a final x4 step to the input.

What differs from SMP, and why:

- The levels are the encoder's taps at strides 4 to 32, the paper's four. SMP also feeds a
  CNN encoder's stride-2 feature (squeezed to 1/4 by its resize), but not a MiT
  encoder's, which has none; seg's encoders stop at stride 4, and shrinking is no
  upsampling step. With the same taps, SMP's decoder (its stride-2 channels 0, as for
  MiT) has the same parameters and shapes.
- Every resize is an upsampling step from the zoo (``upsampler``, ``final_upsampler``),
  each guided by the stride-4 tap; with ``bilinear`` they are SMP's resizes, the final one
  with ``align_corners=False`` (SMP's head uses ``True``): the convention of every seg
  upsampler. The stride-4 level needs no step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seg.errors import BadValue
from seg.models.blocks import SKIP_STRIDE, conv_bn_relu, initialise_as_smp, skip_tap
from seg.models.decoder import BILINEAR, DECODERS, Decoder, UpsamplerFactory, fit_to, make_step
from seg.models.upsamplers import upsample


def level_taps(strides: Sequence[int]) -> list[int]:
    """The indices of the taps SegFormer fuses, coarsest first (SMP's concatenation
    order): every tap at stride 4 or coarser, each a whole number of times stride 4."""
    levels = [i for i, stride in enumerate(strides) if stride >= SKIP_STRIDE]
    uneven = [strides[i] for i in levels if strides[i] % SKIP_STRIDE]
    if uneven:
        raise BadValue(f"model.decoder.name=segformer brings every tap to stride "
                       f"{SKIP_STRIDE}; this encoder's are at {tuple(strides)}: use one "
                       f"whose strides are multiples of {SKIP_STRIDE}")
    return levels[::-1]


@DECODERS.register("segformer")
class SegformerDecoder(Decoder):
    """SMP's Segformer decoder and segmentation head (see the module's docstring).

    ``channels``: the one width every level is brought to and the fusion keeps (SMP's
    ``decoder_segmentation_channels``). Each level's step gets the stride-4 tap as guide.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        upsampler: UpsamplerFactory = BILINEAR,
        final_upsampler: UpsamplerFactory | None = None,
        channels: int = 256,
    ) -> None:
        super().__init__()
        self.skip_tap = skip_tap(strides, "segformer")
        self.levels = level_taps(strides)
        self.strides = tuple(strides)
        guide = in_channels[self.skip_tap]
        self.mlp = nn.ModuleList(nn.Conv2d(in_channels[i], channels, 1) for i in self.levels)
        # the stride-4 level is already there: an identity, which upsamplers() leaves out
        self.steps = nn.ModuleList(
            make_step(upsampler, channels, strides[i] // SKIP_STRIDE, guide_channels=guide)
            if strides[i] > SKIP_STRIDE else nn.Identity()
            for i in self.levels
        )
        self.fuse = conv_bn_relu(len(self.levels) * channels, channels)
        self.head = nn.Conv2d(channels, num_classes, 1)
        self.final = make_step(final_upsampler or upsampler, num_classes, SKIP_STRIDE)
        # SMP's levels are nn.Linear, which it initialises as its head: Xavier-uniform
        initialise_as_smp(kaiming=[self.fuse], xavier=[self.mlp, self.head])

    @property
    def output_stride(self) -> int:
        return SKIP_STRIDE

    def upsamplers(self) -> list[nn.Module]:
        inner = [step for step in self.steps if not isinstance(step, nn.Identity)]
        return [*inner, self.final]

    def forward(self, features: Sequence[torch.Tensor], image_size: tuple[int, int]
                ) -> torch.Tensor:
        guide = features[self.skip_tap]  # (B, C4, H/4, W/4)
        size = guide.shape[-2:]
        resized = [fit_to(upsample(step, mlp(features[i]), guide), *size,
                          self.strides[i] // SKIP_STRIDE)  # (B, C, H/4, W/4)
                   for i, mlp, step in zip(self.levels, self.mlp, self.steps, strict=True)]
        fused = self.fuse(torch.cat(resized, dim=1))  # (B, C, H/4, W/4)
        scores = self.head(fused)  # (B, K, H/4, W/4)
        return fit_to(upsample(self.final, scores), *image_size, SKIP_STRIDE)  # (B, K, H, W)
