"""Models: encoders, upsamplers, the FCN decoder and the model that joins them."""

from seg.models.decoder import FCNDecoder
from seg.models.encoders import ENCODERS, Encoder, build_encoder
from seg.models.model import SegmentationModel, build_model
from seg.models.upsamplers import UPSAMPLERS, build_upsampler, register_upsampler

# the content-aware upsamplers register themselves in UPSAMPLERS when imported
from seg.models import carafe, dysample  # noqa: E402, F401  isort: skip

__all__ = [
    "ENCODERS",
    "UPSAMPLERS",
    "Encoder",
    "FCNDecoder",
    "SegmentationModel",
    "build_encoder",
    "build_model",
    "build_upsampler",
    "register_upsampler",
]
