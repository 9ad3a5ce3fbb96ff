"""``trainer``: steady-state images/s of ``seg.engine.Trainer.fit`` over a bare loop
(forward, loss, zero_grad, backward, step, scheduler step) on the default model (configs/),
the same batches of 8 160x160 crops held in memory; both warmed up first."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from seg.data.labels import IGNORE_INDEX

from .data import random_batches
from .harness import compose
from .training import fit_images_per_second


def bare_images_per_second(cfg, model, batches: list, device: torch.device) -> float:
    """The loop a PyTorch tutorial writes, in the same memory format as ours."""
    from hydra.utils import instantiate

    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    scheduler = instantiate(cfg.scheduler, total_iters=len(batches))(optimizer=optimizer)
    model.to(device, memory_format=torch.channels_last).train()

    def step(batch: dict) -> None:
        images = batch["image"].to(device, memory_format=torch.channels_last)
        loss = torch.nn.functional.cross_entropy(model(images), batch["mask"].to(device),
                                                 ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

    for batch in batches[:5]:
        step(batch)
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    return len(batches) * len(batches[0]["mask"]) / (time.perf_counter() - start)


def run(steps: int = 40, rounds: int = 4) -> dict:
    """Ours vs bare in ``rounds`` back-to-back pairs, alternating which goes first, so that
    the machine's drift hits both; the median of the pairs' ratios."""
    from seg.engine import resolve_device
    from seg.training import model_of

    cfg = compose("trainer.precision=32")  # what the bare loop runs too
    device = resolve_device("auto")
    classes = cfg.dataset.num_classes
    batches = random_batches(steps, cfg.dataset.batch_size, cfg.dataset.crop_size, classes)

    def fresh_model():
        torch.manual_seed(0)
        return model_of(cfg.model, classes)

    ours, bare = [], []
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(rounds):
            for side in ("ours", "bare") if round_ % 2 == 0 else ("bare", "ours"):
                if side == "ours":
                    ours.append(fit_images_per_second(cfg, fresh_model(), batches, device,
                                                      Path(folder), classes))
                else:
                    bare.append(bare_images_per_second(cfg, fresh_model(), batches, device))
    ratios = [o / b for o, b in zip(ours, bare, strict=True)]
    return {"ours": statistics.median(ours), "bare": statistics.median(bare),
            "ratio": statistics.median(ratios), "ratios": ratios, "steps": steps,
            "batch": cfg.dataset.batch_size, "size": cfg.dataset.crop_size,
            "device": str(device)}


def report(result: dict) -> str:
    return "\n".join([
        f"Trainer overhead: default model, batch {result['batch']} of {result['size']}x"
        f"{result['size']} in memory, {len(result['ratios'])} x {result['steps']} steps "
        f"each, {result['device']} (medians)",
        f"  seg Trainer.fit:                           {result['ours']:7.1f} images/s",
        f"  bare PyTorch loop:                         {result['bare']:7.1f} images/s",
        f"  ratio:                                     {result['ratio']:7.3f}",
        "  ratio of each pair:                        "
        + ", ".join(f"{r:.3f}" for r in result["ratios"]),
    ])
