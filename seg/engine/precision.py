"""Numeric precision: which one a device runs best, and its autocast context."""

from __future__ import annotations

from contextlib import nullcontext

import torch

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


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` (a no-op for fp32)."""
    dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(precision)
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
