"""Numeric precision: which one a device runs best, and its autocast context."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from seg.errors import BadValue

PRECISIONS = ("32", "bf16", "16", "auto")


def cpu_has_bf16() -> bool:
    """True where oneDNN runs bf16 natively (AVX512-BF16 or AMX); elsewhere it emulates
    bf16 and is slower than fp32."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_precision(precision: str | int, device: torch.device) -> str:
    """``auto`` picks the fastest safe mode: bf16 on GPUs and CPUs that support it, fp16
    (with gradient scaling) on older GPUs, fp32 otherwise."""
    precision = str(precision)
    if precision not in PRECISIONS:
        raise BadValue(f"trainer.precision={precision}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "16"
        return "bf16" if device.type == "cpu" and cpu_has_bf16() else "32"
    if precision == "16" and device.type != "cuda":
        raise BadValue("trainer.precision=16 needs CUDA: use bf16 or 32 on the CPU")
    return precision


def precision_reason(requested: str | int, resolved: str, device: torch.device) -> str:
    """Why a run trains at ``resolved``: as set, or what ``auto`` saw on ``device``."""
    if str(requested) != "auto":
        return "trainer.precision"
    if device.type == "cuda":
        return ("auto: this GPU runs bf16" if resolved == "bf16"
                else "auto: no bf16 on this GPU, fp16 with gradient scaling")
    if resolved == "bf16":
        return ("auto: this CPU runs bf16 natively, faster than fp32 here; depthwise "
                "convolutions stay fp32, whose bf16 backward is slower (BENCHMARKS.md, "
                "Precisions)")
    return "auto: this CPU has no native bf16 (emulated, slower than fp32)"


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` (a no-op for fp32)."""
    dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(precision)
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


class Float32Convolution:
    """Mixed into a convolution's class: under the CPU's autocast it runs in fp32 and
    hands autocast's dtype on, so the layers after it see what they would have."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
            return super().forward(x)
        with torch.autocast("cpu", enabled=False):
            out = super().forward(x.float())
        return out.to(torch.get_autocast_dtype("cpu"))


FLOAT32_CLASSES: dict[type, type] = {}


def is_depthwise(module: nn.Module) -> bool:
    """A convolution with one filter group per input channel (MobileNet's, EfficientNet's)."""
    return isinstance(module, nn.Conv2d) and 1 < module.groups == module.in_channels


def keep_depthwise_in_fp32(model: nn.Module) -> int:
    """Run ``model``'s depthwise convolutions in fp32 under CPU autocast; returns how many.

    oneDNN's bf16 depthwise backward is 3 to 9 times slower than its fp32 one on 2-core
    Xeons with AMX (tf_efficientnet_lite0's 5 x 5 layers, batch 8: 16-34 ms against 4-5;
    BENCHMARKS.md), which made bf16 slower than fp32 for depthwise-heavy encoders. Each
    module's class becomes a subclass with :class:`Float32Convolution` mixed in, so its
    parameters, its state_dict keys and its own forward (timm's padding-"same" one) stay.
    """
    converted = 0
    for module in model.modules():
        if is_depthwise(module) and not isinstance(module, Float32Convolution):
            cls = type(module)
            if cls not in FLOAT32_CLASSES:
                FLOAT32_CLASSES[cls] = type(f"Float32{cls.__name__}", (Float32Convolution, cls),
                                            {"__module__": cls.__module__})
            module.__class__ = FLOAT32_CLASSES[cls]
            converted += 1
    return converted
