"""The segmentation model: an encoder and a decoder, logits at the input's size."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import torch
from torch import nn

from seg.errors import BadValue
from seg.models.decoder import DECODERS, Decoder
from seg.models.encoders import ENCODERS, Encoder, build_encoder
from seg.models.normalise import IMAGENET_MEAN, IMAGENET_STD, Normalise
from seg.models.upsamplers import UPSAMPLERS, build_upsampler


class SegmentationModel(nn.Module):
    """``forward(images (B, 3, H, W)) -> logits (B, K, H, W)`` for any H and W, the images
    as decoded (0-255, uint8 or float): the model normalises them first (``normalise``,
    default ImageNet's statistics), so that training, evaluation, seg-predict and the ONNX
    graph share one normalisation."""

    def __init__(self, encoder: Encoder, decoder: Decoder,
                 normalise: Normalise | None = None) -> None:
        super().__init__()
        self.normalise = normalise if normalise is not None else Normalise(IMAGENET_MEAN,
                                                                           IMAGENET_STD)
        self.encoder = encoder
        self.decoder = decoder
        self.encoder_frozen = False
        self.encoder_norms_frozen = False

    def freeze_encoder(self) -> None:
        """Fix the encoder as it is: its weights get no gradient (the backward pass stops
        at the decoder) and its batch norms keep their statistics, in eval mode even
        while the model trains (mmsegmentation's frozen stages with ``norm_eval``)."""
        self.encoder_frozen = True
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def freeze_encoder_norms(self) -> None:
        """Keep the encoder's batch-norm statistics as they came (pretrained), in eval mode
        while the model trains; their scales and shifts still learn: mmsegmentation's
        ``norm_eval``, for batches too small to estimate statistics from."""
        self.encoder_norms_frozen = True
        self.train(self.training)

    def train(self, mode: bool = True) -> SegmentationModel:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        elif self.encoder_norms_frozen:
            for module in self.encoder.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.encoder(self.normalise(images))
        return self.decoder(features, tuple(images.shape[-2:]))

    @property
    def output_stride(self) -> int:
        """The stride of the finest map, which the decoder's last upsampling step enlarges."""
        return self.decoder.output_stride

    def upsamplers(self) -> list[nn.Module]:
        """The decoder's upsampling steps, coarse to fine."""
        return self.decoder.upsamplers()

    def upsampler_parameters(self) -> int:
        """How many trainable parameters the upsampling steps add."""
        return sum(p.numel() for step in self.upsamplers() for p in step.parameters()
                   if p.requires_grad)


def build_model(
    encoder: Encoder,
    decoder_factory: Callable[..., Decoder],
    num_classes: int,
    upsampler: Callable[..., nn.Module],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    final_upsampler: Callable[..., nn.Module] | None = None,
) -> SegmentationModel:
    """Assemble a model: the decoder is sized from the encoder's taps; ``upsampler``
    is called as ``upsampler(channels=..., factor=...)`` for each upsampling step inside
    the decoder, ``final_upsampler`` (None: ``upsampler``) for its last, to the input's
    size; the input is normalised with ``mean`` and ``std`` (fractions of 255, RGB)."""
    # final_upsampler only where set: a decoder of one's own may not take it
    final = {} if final_upsampler is None else {"final_upsampler": final_upsampler}
    decoder = decoder_factory(
        in_channels=encoder.channels,
        strides=encoder.strides,
        num_classes=num_classes,
        upsampler=upsampler,
        **final,
    )
    return SegmentationModel(encoder, decoder, Normalise(mean, std))


def model_from_config(config: object, num_classes: int, weights: bool = True,
                      mean: Sequence[float] = IMAGENET_MEAN,
                      std: Sequence[float] = IMAGENET_STD) -> SegmentationModel:
    """The model a config's ``model`` node describes (plain data: ``{"encoder": {"name":
    ..., options}, "decoder": {...}, "upsampler": {...}, "final_upsampler": {...} or
    None}``), every part named from its
    catalogue with its options checked (seg.catalogue). Training and reloading a
    checkpoint both build here; ``weights=False`` leaves the encoder's ``weights``
    unread, as a checkpoint's own weights replace them (and never name another file).
    ``mean`` and ``std``: the input normalisation (the run's ``dataset.mean``/``std``, which
    default to the encoder's pretrained record; a checkpoint's own)."""
    if not isinstance(config, Mapping):
        raise BadValue(f"model is not a config node (got {type(config).__name__})")
    decoder_name, decoder_options = DECODERS.read(config.get("decoder"), "model.decoder")
    final = config.get("final_upsampler")
    builder = DECODERS.entry(decoder_name).builder
    if final is not None and "final_upsampler" not in inspect.signature(builder).parameters:
        raise BadValue(f"model.final_upsampler: the {decoder_name} decoder takes no "
                       "final_upsampler (its steps all come from model.upsampler): leave it "
                       "null")
    return build_model(encoder_from_config(config.get("encoder"), weights),
                       partial(DECODERS.build, decoder_name, **decoder_options), num_classes,
                       upsampler_factory(config.get("upsampler"), "model.upsampler"),
                       mean, std,
                       None if final is None else upsampler_factory(final,
                                                                    "model.final_upsampler"))


def upsampler_factory(node: object, where: str) -> Callable[..., nn.Module]:
    """What builds each step of the upsampler a config node names (options checked)."""
    name, options = UPSAMPLERS.read(node, where)
    return partial(build_upsampler, name, **options)


def encoder_from_config(node: object, weights: bool = True) -> Encoder:
    """The encoder a ``model.encoder`` node names (see :func:`model_from_config`)."""
    name, options = ENCODERS.read(node, "model.encoder")
    if not weights:
        options["weights"] = None
    return build_encoder(name, **options)
