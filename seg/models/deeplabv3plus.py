"""DeepLabV3+ (Chen, Zhu, Papandreou, Schroff and Adam, "Encoder-Decoder with Atrous
Separable Convolution for Semantic Image Segmentation", ECCV 2018), as
segmentation_models_pytorch (SMP 0.6) builds it: atrous spatial pyramid pooling (ASPP)
on a coarse tap, an upsampling step to the stride-4 skip, the skip projected to 48 maps,
both concatenated and fused by a 3x3 separable conv-BN-ReLU, a 1x1 head to class scores
and a final x4 step to the input.

What differs from SMP, and why:

- SMP dilates the encoder's last stage to keep it at stride 16 (``encoder_output_stride``);
  seg's encoders are dilated only when asked (``model.encoder.output_stride=16``, the
  ResNets'), so ASPP reads the encoder's last tap: with a dilated encoder it
  sits at stride 16, as SMP's and the paper's (same parameters, same shapes); undilated
  at stride 32, with the same parameters, enlarged x8 instead of x4. ``aspp_stride``
  (32; 16) is the coarsest stride ASPP accepts: 16 refuses an undilated encoder, whose
  last stage it would leave unused (SMP's ``encoder_depth=4`` drops that stage instead).
- Every resize is an upsampling step from the zoo (``upsampler``, ``final_upsampler``);
  with ``bilinear`` they are SMP's two fixed bilinear steps, but with
  ``align_corners=False`` (SMP's use ``True``): the convention of every seg upsampler.
- The image-pooling branch broadcasts its 1x1 map instead of interpolating it: the same
  values, and no interpolation in the graph. Like SMP's, its batch norm needs a batch of
  at least 2 in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seg.errors import BadValue
from seg.models.blocks import SKIP_STRIDE, conv_bn_relu, initialise_as_smp, skip_tap
from seg.models.decoder import BILINEAR, DECODERS, Decoder, UpsamplerFactory, fit_to, make_step
from seg.models.upsamplers import upsample


class ImagePooling(nn.Module):
    """ASPP's image-level branch: the global mean, a 1x1 conv-BN-ReLU, broadcast back."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.project = conv_bn_relu(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.project(x.mean(dim=(2, 3), keepdim=True))  # (B, C, 1, 1)
        return pooled.expand(-1, -1, *x.shape[-2:])  # (B, C, H, W)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, one 3x3 branch per atrous rate
    (depthwise-separable if ``separable``, as SMP's default), image pooling; concatenated,
    projected by a 1x1 conv-BN-ReLU, then dropout (SMP's ``nn.Dropout``)."""

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int],
                 separable: bool, dropout: float) -> None:
        super().__init__()
        self.branches = nn.ModuleList([
            conv_bn_relu(in_channels, out_channels),
            *(conv_bn_relu(in_channels, out_channels, 3, dilation=rate, separable=separable)
              for rate in rates),
            ImagePooling(in_channels, out_channels),
        ])
        self.project = conv_bn_relu(len(self.branches) * out_channels, out_channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid = torch.cat([branch(x) for branch in self.branches], dim=1)  # (B, 5C, H, W)
        return self.dropout(self.project(pyramid))


def aspp_tap(strides: Sequence[int], aspp_stride: int) -> int:
    """The index of the tap ASPP reads: the last (deepest) one at a stride of at most
    ``aspp_stride`` (a dilated encoder's last stage sits at a finer stride than 32). A
    deeper tap would leave the encoder's last stage without a gradient, which
    DistributedDataParallel refuses (and which costs its compute for nothing)."""
    if aspp_stride not in (16, 32):
        raise BadValue(f"model.decoder.aspp_stride={aspp_stride}: use 16 or 32")
    index = max(i for i, stride in enumerate(strides) if stride <= aspp_stride)
    if strides[index] <= SKIP_STRIDE:
        raise BadValue(f"model.decoder.name=deeplabv3plus needs a tap coarser than stride "
                       f"{SKIP_STRIDE}; this encoder's are at {tuple(strides)}")
    if index < len(strides) - 1:
        raise BadValue(f"model.decoder.aspp_stride={aspp_stride} leaves the encoder's "
                       f"stride-{strides[-1]} stage unused: use aspp_stride=32, or an "
                       f"encoder dilated to output stride {aspp_stride} (the ResNets' "
                       f"model.encoder.output_stride={aspp_stride})")
    return index


@DECODERS.register("deeplabv3plus")
class DeepLabV3PlusDecoder(Decoder):
    """SMP's DeepLabV3+ decoder and segmentation head (see the module's docstring).

    ``aspp_stride``: 32 or 16, the coarsest stride ASPP may read at; ``channels``: ASPP's
    and the fusion's width (SMP's ``decoder_channels``); ``atrous_rates``,
    ``aspp_separable`` and ``aspp_dropout`` as SMP's; ``skip_channels``: the stride-4
    skip's projection (48, the paper's). The step from ASPP to the skip gets the skip as
    its guide.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        upsampler: UpsamplerFactory = BILINEAR,
        final_upsampler: UpsamplerFactory | None = None,
        aspp_stride: int = 32,
        channels: int = 256,
        atrous_rates: tuple[int, int, int] = (12, 24, 36),
        aspp_separable: bool = True,
        aspp_dropout: float = 0.5,
        skip_channels: int = 48,
    ) -> None:
        super().__init__()
        self.skip_tap = skip_tap(strides, "deeplabv3plus")
        self.aspp_tap = aspp_tap(strides, aspp_stride)
        self.aspp = nn.Sequential(
            ASPP(in_channels[self.aspp_tap], channels, atrous_rates, aspp_separable,
                 aspp_dropout),
            conv_bn_relu(channels, channels, 3, separable=True),
        )
        skip = in_channels[self.skip_tap]
        self.up_factor = strides[self.aspp_tap] // SKIP_STRIDE
        self.up = make_step(upsampler, channels, self.up_factor, guide_channels=skip)
        self.skip = conv_bn_relu(skip, skip_channels)
        self.fuse = conv_bn_relu(channels + skip_channels, channels, 3, separable=True)
        self.head = nn.Conv2d(channels, num_classes, 1)
        self.final = make_step(final_upsampler or upsampler, num_classes, SKIP_STRIDE)
        initialise_as_smp(kaiming=[self.aspp, self.skip, self.fuse], xavier=[self.head])

    @property
    def output_stride(self) -> int:
        return SKIP_STRIDE

    def upsamplers(self) -> list[nn.Module]:
        return [self.up, self.final]

    def forward(self, features: Sequence[torch.Tensor], image_size: tuple[int, int]
                ) -> torch.Tensor:
        high_res = features[self.skip_tap]  # (B, C4, H/4, W/4)
        context = self.aspp(features[self.aspp_tap])  # (B, C, H/s, W/s)
        context = fit_to(upsample(self.up, context, high_res), *high_res.shape[-2:],
                         self.up_factor)
        fused = self.fuse(torch.cat([context, self.skip(high_res)], dim=1))  # (B, C, H/4, W/4)
        scores = self.head(fused)  # (B, K, H/4, W/4)
        return fit_to(upsample(self.final, scores), *image_size, SKIP_STRIDE)  # (B, K, H, W)
