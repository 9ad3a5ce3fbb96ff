"""``encoders``: training images/s of ``Trainer.fit`` on make train's model and recipe with
the ``simple`` encoder and with ``model/encoder=timm`` (tf_efficientnet_lite0), fp32, the
same random batches held in memory, in alternating rounds."""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

from .data import random_batches
from .harness import compose, device_name
from .training import fit_images_per_second

ENCODER_SIDES = {  # make train's model with each encoder
    "simple": ("model/encoder=simple",),
    "timm tf_efficientnet_lite0": ("model/encoder=timm",
                                   "model.encoder.model_name=tf_efficientnet_lite0"),
}


def run(steps: int = 20, rounds: int = 2,
        sides: Mapping[str, tuple[str, ...]] = ENCODER_SIDES) -> dict:
    """Training images/s of ``Trainer.fit`` with each encoder of ``sides`` (its config
    overrides; make train's recipe otherwise, fp32, random init), in ``rounds`` alternating
    rounds; the median of each. A timm side is left out where timm is not installed."""
    from seg.engine import resolve_device
    from seg.training import model_of

    device = resolve_device("auto")
    configs = {name: compose("trainer.precision=32", *overrides)
               for name, overrides in sides.items()
               if "timm" not in name or importlib.util.find_spec("timm") is not None}
    first = next(iter(configs.values()))
    batches = random_batches(steps, first.dataset.batch_size, first.dataset.crop_size,
                             first.dataset.num_classes)
    rates: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(rounds):
            for name in (list(configs) if round_ % 2 == 0 else list(configs)[::-1]):
                cfg = configs[name]
                torch.manual_seed(0)
                model = model_of(cfg.model, cfg.dataset.num_classes)
                rates[name].append(fit_images_per_second(cfg, model, batches, device,
                                                         Path(folder), cfg.dataset.num_classes))
    return {"rates": {name: statistics.median(r) for name, r in rates.items()},
            "parameters": {name: sum(p.numel() for p in model_of(
                cfg.model, cfg.dataset.num_classes).encoder.parameters())
                for name, cfg in configs.items()},
            "batch": first.dataset.batch_size, "size": first.dataset.crop_size,
            "decoder": first.model.decoder.name, "device": device_name(device)}


def report(result: dict) -> str:
    lines = [f"Encoders: training images/s of Trainer.fit, {result['decoder']}, batch "
             f"{result['batch']} at {result['size']} px, fp32, random init "
             f"({result['device']})"]
    for name, rate in result["rates"].items():
        lines.append(f"  {name:28s} {result['parameters'][name]:>10,} encoder params "
                     f"{rate:8.1f} images/s")
    return "\n".join(lines)
