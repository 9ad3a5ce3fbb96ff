"""FADE (Lu, Liu, Fu and Cao, "FADE: Fusing the Assets of Decoder and Encoder for
Task-Agnostic Upsampling", ECCV 2022): CARAFE-style reassembly kernels predicted from the
encoder's feature (the guide, at the output's resolution) and the decoder's (the input)
together, and a gate between the upsampled decoder feature and the encoder feature.

The kernel predictor, as in the paper's "semi-shift" convolution: both features are
compressed by 1 x 1 convolutions to ``embedding_dim`` maps (the paper's 64; the
decoder's without bias), and one ``encoder_kernel_size`` convolution (the paper's 3 x 3)
is applied to each, the encoder's at the output pixel, the decoder's at its source pixel;
their sum is the logit of each tap. The gate is the paper's: ``sigmoid`` of a 1 x 1
convolution of the decoder feature, one value per source pixel.

What differs from the paper, and why:

- The kernel is ``softmax(log bilinear + z)`` over the source pixel's 3 x 3
  neighbourhood (seg.models.sapa.GuidedReassembly, which says why, and what it costs),
  not ``softmax(z)`` over 5 x 5: the content encoder starts at zero, so the kernel starts
  as bilinear's. The neighbourhood repeats the edge beyond the border (the paper's
  CARAFE pads with zeros).
- The gate: the paper's output is ``gate * en + (1 - gate) * up(de)``, which needs the
  encoder feature to have the decoder's channels (its output's); here the encoder side
  is ``up(de) + P(en)``, a 1 x 1 projection ``P`` of the guide to the input's channels,
  added to the upsampled input, so the output is ``up(de) + gate * P(en)``. ``P``
  starts at zero, so the output starts exactly as bilinear interpolation of the input,
  which the paper's form cannot (its gate is a sigmoid, never 0). The price: the gate
  can add the encoder's feature but not remove the decoder's.
- Every integer factor, not only 2; plain PyTorch in place of mmcv's CARAFE op, so it
  runs on the CPU, under bf16 autocast and in ONNX from opset 11.
- A step with no guide (FCN-32s, the last step to the image) is guided by its input
  upsampled bilinearly (``guide_channels`` None: the input's channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seg.errors import BadValue
from seg.models.sapa import WINDOW, GuidedReassembly, phases_last, reassemble
from seg.models.upsamplers import UPSAMPLERS, resize


@UPSAMPLERS.register("fade")
class FadeUpsampler(GuidedReassembly):
    """FADE: reassembly kernels from the encoder's and the decoder's features together,
    and a gated projection of the encoder's feature added to the upsampled input; starts
    exactly as bilinear (see the module docstring for what differs from the paper)."""

    def __init__(self, channels: int, factor: int, guide_channels: int | None = None,
                 embedding_dim: int = 64, encoder_kernel_size: int = 3) -> None:
        super().__init__(channels, factor, guide_channels)
        if embedding_dim < 1:
            raise BadValue(f"fade embedding_dim must be positive, got {embedding_dim}")
        if encoder_kernel_size < 1 or encoder_kernel_size % 2 == 0:
            raise BadValue("fade encoder_kernel_size must be odd and positive, got "
                           f"{encoder_kernel_size}")
        self.compress_guide = nn.Conv2d(self.guide_channels, embedding_dim, 1)
        self.compress_input = nn.Conv2d(channels, embedding_dim, 1, bias=False)
        self.encode = nn.Conv2d(embedding_dim, WINDOW**2, encoder_kernel_size,
                                padding=encoder_kernel_size // 2)
        self.gate = nn.Conv2d(channels, 1, 1)
        self.project = nn.Conv2d(self.guide_channels, channels, 1)
        for layer in (self.compress_guide, self.compress_input, self.gate):
            nn.init.xavier_uniform_(layer.weight)  # the paper's
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        # zero logits and a zero projection: the output starts as bilinear interpolation
        for layer in (self.encode, self.project):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def logits(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        padding = self.encode.padding
        at_output = self.encode(self.compress_guide(guide))  # (B, 9, H f, W f)
        at_source = F.conv2d(self.compress_input(x), self.encode.weight,
                             padding=padding)  # (B, 9, H, W), the bias counted once
        # each output pixel: its own logits plus those of its source pixel
        at_source = at_source.flatten(2).transpose(1, 2)[:, :, None]  # (B, H W, 1, 9)
        return phases_last(at_output, self.factor) + at_source  # (B, H W, f^2, 9)

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        guide = self.guide_for(x, guide)
        upsampled = reassemble(x, self.kernels(x, guide), self.factor)  # (B, C, H f, W f)
        gate = resize(torch.sigmoid(self.gate(x)), self.factor, mode="nearest")
        return upsampled + gate * self.project(guide)  # (B, C, H f, W f)
