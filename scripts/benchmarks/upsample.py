"""``upsample``: forward + backward milliseconds of the learned channel-wise transposed
convolution of seg's ``TransposedConvUpsampler`` (kernel 2f - f % 2, stride f, one kernel
per channel) at factors 2 to 32, computed by ``conv_transpose_by_phases`` and by the native
``conv_transpose2d``, at the training precision and memory format (channels_last): 21
channels, batch 8 to 512x512 on CUDA, batch 2 to 256x256 on the CPU. (The ``upsample``
command also runs the ``upsamplers`` benchmark.)"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .harness import PRECISION_NAMES, device_name, median_ms

UPSAMPLE_FACTORS = (2, 4, 8, 16, 32)


def upsample_settings(device_type: str) -> dict:
    if device_type == "cuda":
        return {"channels": 21, "batch": 8, "size": 512, "warmup": 5, "repeats": 30}
    return {"channels": 21, "batch": 2, "size": 256, "warmup": 2, "repeats": 10}


def upsample_case(factor: int, channels: int, batch: int, size: int, device: torch.device,
                  dtype: torch.dtype = torch.float32, seed: int = 0) -> dict:
    """The transposed convolution of seg's ``TransposedConvUpsampler(channels, factor)``
    (its geometry and bilinear kernel, learned) on a channels_last map of ``size / factor``
    plus the replicated edge pixel on each side, so that its output is ``size`` square;
    ``grad``: a gradient of that output in ``dtype``, the precision it is computed in."""
    from seg.models.transposed import TransposedConvUpsampler

    deconv = TransposedConvUpsampler(channels, factor).deconv
    generator = torch.Generator().manual_seed(seed)
    side = size // factor + 2
    image = torch.randn(batch, channels, side, side, generator=generator)
    grad = torch.randn(batch, channels, size, size, generator=generator)
    return {"x": image.to(device, memory_format=torch.channels_last).requires_grad_(),
            "weight": deconv.weight.detach().to(device).requires_grad_(),
            "grad": grad.to(device, dtype, memory_format=torch.channels_last),
            "stride": deconv.stride[0], "padding": deconv.padding[0], "groups": deconv.groups}


def native_transposed(case: dict) -> torch.Tensor:
    return torch.nn.functional.conv_transpose2d(
        case["x"], case["weight"], stride=case["stride"], padding=case["padding"],
        groups=case["groups"])


def transposed_by_phases(case: dict) -> torch.Tensor:
    from seg.models.phase_kernels import conv_transpose_by_phases

    return conv_transpose_by_phases(case["x"], case["weight"], case["stride"],
                                    case["padding"], case["groups"])


UPSAMPLE_PATHS = {"native": native_transposed, "phases": transposed_by_phases}


def forward_backward(path: Callable[[dict], torch.Tensor], case: dict, device: torch.device,
                     precision: str) -> None:
    from seg.engine.precision import autocast

    case["x"].grad = case["weight"].grad = None
    with autocast(device, precision):
        output = path(case)
    output.backward(case["grad"])


def run(device: torch.device | None = None, settings: dict | None = None,
        factors: Sequence[int] = UPSAMPLE_FACTORS) -> dict:
    """``{"timings": {device type: {factor: {"native": ms, "phases": ms}}}, "settings"}``:
    median forward + backward milliseconds of both ways, and the settings they ran with.
    ``settings``: ``upsample_settings``'s, with ``precision`` (default: the one Trainer
    picks, ``auto``); those returned hold it resolved, and the ``device_name``."""
    from seg.engine import resolve_device, resolve_precision

    device = device or resolve_device("auto")
    settings = {**upsample_settings(device.type), **(settings or {})}
    precision = resolve_precision(settings.get("precision", "auto"), device)
    dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(precision, torch.float32)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as Trainer trains on CUDA
    timings = {}
    for factor in factors:
        case = upsample_case(factor, settings["channels"], settings["batch"], settings["size"],
                             device, dtype)
        timings[factor] = {
            name: median_ms(lambda path=path, case=case: forward_backward(path, case, device,
                                                                          precision),
                            device, settings["warmup"], settings["repeats"])
            for name, path in UPSAMPLE_PATHS.items()}
    return {"timings": {device.type: timings},
            "settings": {**settings, "precision": precision, "device_name": device_name(device)}}


def faster_path(timing: dict) -> str:
    """``phases (1.23x)``: the faster way, and how many times faster it is."""
    fast, slow = sorted(timing, key=timing.get)
    return f"{fast} ({timing[slow] / timing[fast]:.2f}x)"


def report(result: dict) -> str:
    ((_, rows),) = result["timings"].items()
    settings = result["settings"]
    size = settings["size"]
    lines = [
        f"Upsample: the channel-wise transposed convolution of seg's TransposedConvUpsampler "
        f"(kernel 2f - f%2, stride f), {settings['channels']} channels, batch "
        f"{settings['batch']} to {size}x{size}, channels_last input, "
        f"{PRECISION_NAMES[settings['precision']]}, {settings['device_name']}",
        f"  forward + backward ms, median of {settings['repeats']} after {settings['warmup']} "
        "warm-up",
        "  factor    native    phases   faster",
        *(f"  x{factor:<5} {t['native']:9.3f} {t['phases']:9.3f}   {faster_path(t)}"
          for factor, t in rows.items()),
    ]
    return "\n".join(lines)
