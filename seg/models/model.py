"""The segmentation model: an encoder and a decoder, logits at the input's size."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from seg.models.decoder import FCNDecoder
from seg.models.encoders import Encoder


class SegmentationModel(nn.Module):
    """``forward(images (B, 3, H, W)) -> logits (B, K, H, W)`` for any H and W."""

    def __init__(self, encoder: Encoder, decoder: FCNDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        return self.decoder(self.encoder(images), height, width)

    @property
    def output_stride(self) -> int:
        """The stride of the finest scores, which the last upsampling step enlarges."""
        return self.decoder.strides[0]

    def upsamplers(self) -> list[nn.Module]:
        """The decoder's upsampling steps, coarse to fine."""
        return [*self.decoder.fuse[::-1], self.decoder.final]

    def upsampler_parameters(self) -> int:
        """How many trainable parameters the upsampling steps add."""
        return sum(p.numel() for step in self.upsamplers() for p in step.parameters()
                   if p.requires_grad)


class NativeStrideClassifier(nn.Module):
    """An encoder with a 1x1 classifier on each tap, scored at the tap's own stride.

    It trains an encoder for segmentation without any upsampling: the labels are
    brought down to each tap's size (nearest) instead of the scores up. The upsampling
    study starts every run from such an encoder, so no upsampler is favoured by it.
    """

    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in encoder.channels)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Scores ``(B, K, H/s, W/s)`` for each tap stride ``s``."""
        return [head(tap) for head, tap in zip(self.heads, self.encoder(images), strict=True)]

    @staticmethod
    def loss(scores: list[torch.Tensor], targets: torch.Tensor, ignore_index: int = 255
             ) -> torch.Tensor:
        """Mean over taps of the cross-entropy against nearest-downsampled labels."""
        losses = []
        for tap_scores in scores:
            labels = F.interpolate(targets[:, None].float(), size=tap_scores.shape[-2:],
                                   mode="nearest")[:, 0].long()  # (B, H/s, W/s)
            losses.append(F.cross_entropy(tap_scores, labels, ignore_index=ignore_index))
        return torch.stack(losses).mean()


def build_model(
    encoder: Encoder,
    decoder_factory: Callable[..., FCNDecoder],
    num_classes: int,
    upsampler: Callable[..., nn.Module],
) -> SegmentationModel:
    """Assemble a model: the decoder is sized from the encoder's taps; ``upsampler``
    is called as ``upsampler(channels=..., factor=...)`` for each upsampling step."""
    decoder = decoder_factory(
        in_channels=encoder.channels,
        strides=encoder.strides,
        num_classes=num_classes,
        upsampler=upsampler,
    )
    return SegmentationModel(encoder, decoder)
