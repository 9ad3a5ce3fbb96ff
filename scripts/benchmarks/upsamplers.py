"""``upsamplers``: for every registered upsampler (default options) at factors 2, 8 and 32
on the study's class-score maps (8 classes, batch 8 of ceil(112 / f) square, channels_last,
the training precision): its trainable parameters, forward + backward milliseconds of one
call, and the bytes allocated at the peak of that call beyond its input and parameters
(CUDA's allocator count; on the CPU, ``seg.study.cost.PeakMemory``: the storage of the
tensors its operators return). Run by the ``upsample`` command."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .harness import PRECISION_NAMES, device_name, median_ms

UPSAMPLER_FACTORS = (2, 8, 32)


def upsampler_settings(device_type: str) -> dict:
    """The study's class-score maps (shapes' 8 classes, batch 8 of 112-pixel crops), where
    the upsamplers' costs are paid; fewer repeats on the CPU keep the run short."""
    repeats = {"warmup": 5, "repeats": 30} if device_type == "cuda" else {"warmup": 2,
                                                                          "repeats": 5}
    return {"channels": 8, "batch": 8, "size": 112, **repeats}


def upsampler_case(name: str, factor: int, settings: dict, device: torch.device,
                   seed: int = 0) -> dict:
    """``name``'s upsampler (its default options) for ``settings["channels"]`` maps, a
    channels_last input of ceil(size / factor) square that needs its gradient, as the
    decoder's scores do, and a gradient of its output."""
    from seg.models import build_upsampler

    channels, batch = settings["channels"], settings["batch"]
    module = build_upsampler(name, channels=channels, factor=factor)
    side = -(-settings["size"] // factor)  # the encoder rounds odd strides' maps up
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, side, side, generator=generator)
    grad = torch.randn(batch, channels, side * factor, side * factor, generator=generator)
    return {"module": module.to(device, memory_format=torch.channels_last),
            "x": x.to(device, memory_format=torch.channels_last).requires_grad_(),
            "grad": grad.to(device, memory_format=torch.channels_last)}


def clear_grads(case: dict) -> None:
    case["x"].grad = None
    case["module"].zero_grad(set_to_none=True)


def upsampler_step(case: dict, device: torch.device, precision: str) -> None:
    from seg.engine.precision import autocast

    clear_grads(case)
    with autocast(device, precision):
        output = case["module"](case["x"])
    output.backward(case["grad"].to(output.dtype))  # autocast may compute it in bf16


def upsampler_cost(case: dict, device: torch.device, settings: dict) -> dict:
    """Trainable parameters, median forward + backward ms and the peak bytes of a call."""
    from seg.study.cost import peak_bytes

    def step() -> None:
        upsampler_step(case, device, settings["precision"])

    ms = median_ms(step, device, settings["warmup"], settings["repeats"])
    clear_grads(case)  # the last call's gradients are no part of the next one's peak
    return {"parameters": sum(p.numel() for p in case["module"].parameters()
                              if p.requires_grad),
            "ms": ms, "peak_bytes": peak_bytes(step, device)}


def run(device: torch.device, settings: dict | None = None,
        factors: Sequence[int] = UPSAMPLER_FACTORS,
        names: Sequence[str] | None = None) -> dict:
    """``{"upsamplers": {device type: {name: {factor: upsampler_cost}}}, "settings"}`` for
    ``names`` (default: every registered upsampler). ``settings``: ``upsampler_settings``'s,
    with ``precision`` (a resolved one: 32, bf16 or 16); those returned add the
    ``device_name``."""
    from seg.models import UPSAMPLERS

    settings = {**upsampler_settings(device.type), "precision": "32", **(settings or {})}
    rows = {name: {factor: upsampler_cost(upsampler_case(name, factor, settings, device),
                                          device, settings)
                   for factor in factors}
            for name in (names or sorted(UPSAMPLERS))}
    return {"upsamplers": {device.type: rows},
            "settings": {**settings, "device_name": device_name(device)}}


def report(result: dict) -> str:
    ((device_type, rows),) = result["upsamplers"].items()
    settings = result["settings"]
    factors = list(next(iter(rows.values())))
    size = settings["size"]
    lines = [
        f"Upsamplers: every registered one, default options, on the study's class-score maps: "
        f"{settings['channels']} channels, batch {settings['batch']} of ceil({size} / f) "
        f"square to f times it, channels_last, {PRECISION_NAMES[settings['precision']]}, "
        f"{settings['device_name']}",
        f"  params: trainable; ms: forward + backward, median of {settings['repeats']} after "
        f"{settings['warmup']} warm-up; MiB: allocated at the call's peak beyond its input",
        "  and parameters (" + ("torch.cuda.max_memory_allocated" if device_type == "cuda"
                                else "storage of the tensors its operators return") + ")",
        f"  {'':<16}" + "".join(f"  {'x' + str(f):>7} {'':>8} {'':>7}" for f in factors),
        f"  {'upsampler':<16}" + "  {:>7} {:>8} {:>7}".format("params", "ms", "MiB")
        * len(factors),
        *(f"  {name:<16}" + "".join(f"  {c['parameters']:7d} {c['ms']:8.2f} "
                                    f"{c['peak_bytes'] / 2**20:7.1f}" for c in row.values())
          for name, row in rows.items()),
    ]
    return "\n".join(lines)
