"""Models: encoders, upsamplers, the FCN decoder and the model that joins them.

Every module of this package is imported here, so the parts it defines register
themselves in their catalogue: a new upsampler family is one new module."""

import importlib
import pkgutil

from seg.models.decoder import DECODERS, Decoder, FCNDecoder
from seg.models.encoders import ENCODERS, Encoder, build_encoder
from seg.models.model import (
    SegmentationModel,
    build_model,
    encoder_from_config,
    model_from_config,
)
from seg.models.upsamplers import UPSAMPLERS, build_upsampler

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DECODERS",
    "ENCODERS",
    "Decoder",
    "UPSAMPLERS",
    "Encoder",
    "FCNDecoder",
    "SegmentationModel",
    "build_encoder",
    "build_model",
    "build_upsampler",
    "encoder_from_config",
    "model_from_config",
]
