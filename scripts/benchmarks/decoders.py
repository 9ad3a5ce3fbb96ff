"""``decoders``: each decoder of seg beside segmentation_models_pytorch's same decoder
(SMP 0.6, the dev extra's peer) on the same encoder, timm's ``tf_efficientnet_lite0``
(random init), with the same fixed upsampling (SMP's: nearest in U-Net, bilinear in the
others): training images/s in the same bare loop (AdamW, cross-entropy, channels_last
model and inputs, batch 8 of 128x128, 8 classes), peak memory (resident set growth, or
CUDA's peak allocation), inference milliseconds per 512x512 image (batch 1, no grad), and
the decoder's parameters (the model's less its encoder's). Each side runs in its own
process (``bench.py decoders-side``), at each precision: fp32, and bf16 where the device
runs it natively. The ratio is ours over SMP's training rate at the same precision."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from .data import random_batches
from .harness import (
    PRECISION_NAMES,
    compose,
    device_name,
    median_ms,
    peak_mb,
    resident_mb,
    timed_loop_images_per_second,
)

ENTRY = Path(__file__).resolve().parents[1] / "bench.py"  # each side runs `bench.py decoders-side`
ENCODER = "tf_efficientnet_lite0"
CLASSES, BATCH, SIZE, INFERENCE_SIZE = 8, 8, 128, 512
# each decoder: SMP's class, the fixed upsampler that matches SMP's resizing, and what
# gives ours SMP's decoder (its U-Net concatenates the encoder's stride-2 feature)
DECODERS = {"unet": ("Unet", "nearest", ("model.encoder.finest_stride=2",)),
            "fpn": ("FPN", "bilinear", ()),
            "deeplabv3plus": ("DeepLabV3Plus", "bilinear", ()),
            "segformer": ("Segformer", "bilinear", ())}
SIDES = ("seg", "smp")


def settings(device_type: str) -> dict:
    """Warm-up and timed training steps, and inference repeats, per device."""
    if device_type == "cuda":
        return {"warmup": 10, "steps": 30, "repeats": 20}
    return {"warmup": 3, "steps": 15, "repeats": 10}


def build(decoder: str, side: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The model of one side, and its encoder (to tell the decoder's parameters apart)."""
    smp_class, upsampler, overrides = DECODERS[decoder]
    if side == "smp":
        import segmentation_models_pytorch as smp

        model = getattr(smp, smp_class)(f"tu-{ENCODER}", encoder_weights=None, classes=CLASSES)
        return model, model.encoder
    from seg.training import model_of

    cfg = compose("model/encoder=timm", f"model.encoder.model_name={ENCODER}",
                  f"model/decoder={decoder}", f"model/upsampler={upsampler}", *overrides)
    model = model_of(cfg.model, CLASSES)
    return model, model.encoder


def training_step(model: torch.nn.Module, device: torch.device, precision: str):
    """One step of the bare loop a user writes: forward under autocast, backward, AdamW."""
    from seg.engine.precision import autocast

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()

    def step(batch: dict) -> None:
        images = batch["image"].to(device, memory_format=torch.channels_last)
        with autocast(device, precision):
            loss = criterion(model(images).float(), batch["mask"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def inference_ms(model: torch.nn.Module, device: torch.device, precision: str,
                 repeats: int) -> float:
    """Median milliseconds of one forward pass of a 512x512 image, without gradients."""
    from seg.engine.precision import autocast

    image = torch.randn(1, 3, INFERENCE_SIZE, INFERENCE_SIZE, device=device).to(
        memory_format=torch.channels_last)
    model.eval()

    def forward() -> None:
        with torch.no_grad(), autocast(device, precision):
            model(image)

    return median_ms(forward, device, warmup=3, repeats=repeats)


def side(decoder: str, name: str, precision: str, plan: dict | None = None) -> dict:
    """One side at one precision, run in its own process so that its memory is its own;
    ``plan``: warm-up, steps and repeats (default :func:`settings`)."""
    from seg.engine import resolve_device

    device = resolve_device("auto")
    plan = plan or settings(device.type)
    batches = random_batches(plan["steps"], BATCH, SIZE, CLASSES, pin=device.type == "cuda")
    baseline = resident_mb()
    torch.manual_seed(0)
    model, encoder = build(decoder, name)
    model.to(device, memory_format=torch.channels_last).train()
    rate = timed_loop_images_per_second(training_step(model, device, precision), batches,
                                        plan["warmup"], device)
    memory = peak_mb(device, baseline)
    parameters = sum(p.numel() for p in model.parameters())
    encoder_parameters = sum(p.numel() for p in encoder.parameters())
    return {"images_per_s": rate, "peak_mb": memory,
            "inference_ms": inference_ms(model, device, precision, plan["repeats"]),
            "decoder_parameters": parameters - encoder_parameters,
            "device": device_name(device), **plan}


def precisions(device: torch.device) -> list[str]:
    """fp32, and bf16 where the device runs it natively."""
    from seg.engine import resolve_precision

    return ["32"] + (["bf16"] if resolve_precision("auto", device) == "bf16" else [])


def run(decoders: tuple[str, ...] = tuple(DECODERS)) -> dict:
    """Every side of every decoder at each precision, each in its own process: ``{decoder:
    {precision: {side: figures}, ..., "ratio": ours / SMP's images/s at the fastest
    precision, "parameter_ratio": ours / SMP's decoder parameters}}``."""
    from seg.engine import resolve_device

    results: dict = {}
    for decoder in decoders:
        results[decoder] = {}
        for precision in precisions(resolve_device("auto")):
            results[decoder][precision] = {name: side_in_process(decoder, name, precision)
                                           for name in SIDES}
        fastest = results[decoder][precisions(resolve_device("auto"))[-1]]
        results[decoder]["ratio"] = fastest["seg"]["images_per_s"] / fastest["smp"]["images_per_s"]
        results[decoder]["parameter_ratio"] = (fastest["seg"]["decoder_parameters"]
                                               / fastest["smp"]["decoder_parameters"])
    return results


def side_in_process(decoder: str, name: str, precision: str) -> dict:
    done = subprocess.run([sys.executable, "-P", str(ENTRY), "decoders-side", decoder, name,
                           "--precision", precision], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"decoders side {decoder} {name} failed ({done.returncode}):\n"
                           + done.stderr[-4000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: dict) -> str:
    first = next(iter(next(iter(results.values())).values()))["seg"]
    lines = [f"Decoders: seg / segmentation_models_pytorch, encoder {ENCODER} (random init), "
             f"bare loop (AdamW, channels_last), batch {BATCH} of {SIZE}x{SIZE}, {CLASSES} "
             f"classes, {first['steps']} timed steps after {first['warmup']}, {first['device']}",
             f"  {'':<24} {'prec.':<5} {'decoder params':>14} {'images/s':>9} "
             f"{'peak MB':>8} {'ms/512²':>8}  ratio"]
    for decoder, by_precision in results.items():
        for precision, sides in by_precision.items():
            if precision not in PRECISION_NAMES:  # the ratios
                continue
            ratio = sides["seg"]["images_per_s"] / sides["smp"]["images_per_s"]
            for name, figures in sides.items():
                label = f"{decoder} ({name})"
                lines.append(
                    f"  {label:<24} {PRECISION_NAMES[precision]:<5} "
                    f"{figures['decoder_parameters']:>14,} {figures['images_per_s']:9.1f} "
                    f"{figures['peak_mb']:8.0f} {figures['inference_ms']:8.1f}"
                    + (f"  {ratio:.2f}x" if name == "seg" else ""))
    lines.append("  ratio: seg's training images/s over SMP's at the same precision; the "
                 "target reads the fastest precision")
    return "\n".join(lines)
