"""``precisions``: training images/s of compare=practice's encoder, timm's
``tf_efficientnet_lite0`` (random init), with the U-Net and FCN-8s decoders and bilinear
steps, in the bare loop of ``decoders`` (AdamW, cross-entropy, channels_last, batch 8 of
112 px, 8 classes), one thread (as the study's runs have), at each precision the device
runs: fp32; bf16 as autocast runs it; and bf16 with the depthwise convolutions kept in
fp32, what ``Trainer`` trains on the CPU (``seg.engine.precision.keep_depthwise_in_fp32``).
``auto_vs_best``: the rate of what ``trainer.precision=auto`` trains with over the fastest
of the others, the lowest over the models."""

from __future__ import annotations

import torch

from .data import random_batches
from .decoders import training_step
from .harness import compose, device_name, timed_loop_images_per_second

ENCODER = ("model/encoder=timm", "model.encoder.model_name=tf_efficientnet_lite0")
DECODERS = ("unet", "fcn8s")
CLASSES, BATCH, SIZE = 8, 8, 112
WARMUP, STEPS = 2, 8


def sides(device: torch.device) -> dict[str, tuple[str, bool]]:
    """Each side: its autocast precision and whether depthwise layers are kept in fp32."""
    from seg.engine import resolve_precision

    if resolve_precision("auto", device) != "bf16":
        return {"fp32": ("32", False)}
    both = {"fp32": ("32", False), "bf16": ("bf16", False)}
    return {**both, "bf16, depthwise fp32": ("bf16", True)} if device.type == "cpu" else both


def auto_side(device: torch.device) -> str:
    """The side that ``trainer.precision=auto`` trains with on ``device``."""
    return list(sides(device))[-1]


def rate(decoder: str, precision: str, keep_depthwise: bool, device: torch.device) -> float:
    """Training images/s of ``decoder`` on the encoder at ``precision``."""
    from seg.engine.precision import keep_depthwise_in_fp32
    from seg.training import model_of

    cfg = compose(*ENCODER, f"model/decoder={decoder}", "model/upsampler=bilinear")
    torch.manual_seed(0)
    model = model_of(cfg.model, CLASSES).to(device, memory_format=torch.channels_last).train()
    if keep_depthwise:
        keep_depthwise_in_fp32(model)
    batches = random_batches(STEPS, BATCH, SIZE, CLASSES)
    return timed_loop_images_per_second(training_step(model, device, precision), batches,
                                        WARMUP, device)


def run(decoders: tuple[str, ...] = DECODERS) -> dict:
    """``{"rates": {decoder: {side: images/s}}, "auto_vs_best": ...}``, one thread."""
    from seg.engine import resolve_device

    device = resolve_device("auto")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rates = {decoder: {name: rate(decoder, precision, keep, device)
                           for name, (precision, keep) in sides(device).items()}
                 for decoder in decoders}
    finally:
        torch.set_num_threads(threads)
    chosen = auto_side(device)
    ratios = [side_rates[chosen] / max(side_rates.values()) for side_rates in rates.values()]
    return {"rates": rates, "auto": chosen, "auto_vs_best": min(ratios),
            "device": device_name(device)}


def report(result: dict) -> str:
    lines = [f"Precisions: training images/s, tf_efficientnet_lite0 (random init), batch "
             f"{BATCH} at {SIZE} px, one thread; trainer.precision=auto trains with "
             f"{result['auto']} ({result['device']})"]
    for decoder, side_rates in result["rates"].items():
        figures = ", ".join(f"{name} {value:.1f}" for name, value in side_rates.items())
        lines.append(f"  {decoder:8s} {figures}")
    lines.append(f"  auto / the fastest: {result['auto_vs_best']:.2f} (the lowest over models)")
    return "\n".join(lines)
