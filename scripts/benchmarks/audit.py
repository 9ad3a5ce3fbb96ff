"""``audit``: one training step (after two uncounted ones) of our ResNet-50 dilated to
output stride 8 and by FCN-8s skips, as ``Trainer.fit`` runs it, and of torchvision's
``fcn_resnet50`` in the bare loop, at one precision (``--precision``, default as the
Trainer resolves ``auto``), counted op by op by ``seg.engine.census.OpCensus``: by kind
(convolutions, matrix products, normalisations, copies and layout conversions, casts,
elementwise, reductions, optimizer kernels, views, other), host synchronisations and the
bytes the ops allocate; then every copy and cast, starred where torchvision's step makes
none like it. The peer benchmark's batch and crop for the device."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from seg.data.labels import IGNORE_INDEX

from .data import random_batches
from .harness import PRECISION_NAMES, compose, device_name
from .peer import CLASSES, PEER_SIDES, peer_settings, torchvision_loop

AUDIT_SIDES = ("ours-os8", "ours-fcn8s", "torchvision")


def ours_loop(overrides: tuple[str, ...], device: torch.device, precision: str,
              classes: int = CLASSES) -> tuple[torch.nn.Module, Callable[[dict], None]]:
    """Our model (train.yaml with ``overrides``, ``classes`` outputs: VOC's by default, as
    the peer trains) and one step as ``Trainer.fit`` runs it: ``train_step``, the loss
    kept on the device (``LossWindow.add``), the scheduler's step."""
    from hydra.utils import instantiate

    from seg.engine import LossWindow
    from seg.training import loss_from_config, model_of

    cfg = compose(*overrides, f"trainer.precision={precision}")
    trainer = instantiate(cfg.trainer, device=str(device), progress=False)
    trainer.apply_process_settings()  # as fit does when a run starts
    model = model_of(cfg.model, classes)
    model.to(device, memory_format=trainer.memory_format).train()
    net = trainer.prepare(model)
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    scheduler = instantiate(cfg.scheduler, total_iters=10)(optimizer=optimizer)
    losses, criterion = LossWindow(device), loss_from_config(cfg)

    def step(batch: dict) -> None:
        loss, skipped = trainer.train_step(net, optimizer, batch, IGNORE_INDEX, criterion)
        losses.add(loss, skipped, 1)
        scheduler.step()

    return model, step


def audit_side(name: str, batch: dict, device: torch.device, precision: str,
               sides: Mapping[str, tuple[str, ...]] = PEER_SIDES) -> dict:
    """One training step of side ``name`` counted by ``seg.engine.census.OpCensus``, after
    two uncounted steps (the optimizer's state is made, the first step's read-back done).
    ``sides``: our sides' config overrides by name."""
    from seg.engine.census import OpCensus

    torch.manual_seed(0)
    if name.startswith("torchvision"):
        model, step, _, _ = torchvision_loop(name, device, 10, precision)
    else:
        model, step = ours_loop(sides[name], device, precision)
    step(batch)
    step(batch)
    census = OpCensus()
    with census, census.within(model):
        step(batch)
    return {"counts": dict(census.counts), "copies": dict(census.copies),
            "sync_ops": dict(census.sync_ops), "allocated_mb": census.allocated_bytes / 2**20}


def run(device: torch.device, precision: str) -> dict:
    """:func:`audit_side` for every side of :data:`AUDIT_SIDES` on one batch of the peer
    benchmark's size for ``device``."""
    settings = peer_settings(device.type)
    batch = random_batches(1, settings["batch"], settings["size"], CLASSES)[0]
    sides = {name: audit_side(name, batch, device, precision) for name in AUDIT_SIDES}
    return {"sides": sides, "batch": settings["batch"], "size": settings["size"],
            "precision": precision, "device_name": device_name(device)}


def conversion(copy: str) -> str:
    """What a census copy entry converts and where (the loop, a module's forward, or
    backward), without its shape and module name."""
    what, _, where = copy.partition(" (")
    place = where.split(" in ", 1)[-1]
    return f"{what} in {place if place in ('the loop', 'backward') else 'forward'}"


def grouped_copies(copies: dict[str, int]) -> dict[str, int]:
    grouped: dict[str, int] = {}
    for what, count in copies.items():
        grouped[conversion(what)] = grouped.get(conversion(what), 0) + count
    return grouped


def report(result: dict) -> str:
    """Op counts by kind, host syncs and allocated MB per side; then each side's copies and
    casts by conversion, those that torchvision's step does not make starred."""
    from seg.engine.census import KINDS

    sides = result["sides"]
    lines = [f"Step audit: one training step, batch {result['batch']} of {result['size']}x"
             f"{result['size']}, {PRECISION_NAMES[result['precision']]}, ops counted by "
             f"seg.engine.census.OpCensus ({result['device_name']})",
             f"  {'kind':<16s}" + "".join(f"{name:>14s}" for name in sides)]
    for kind in KINDS:
        lines.append(f"  {kind:<16s}" + "".join(f"{side['counts'].get(kind, 0):14d}"
                                                for side in sides.values()))
    lines.append(f"  {'allocated MB':<16s}" + "".join(f"{side['allocated_mb']:14.0f}"
                                                      for side in sides.values()))
    peer = grouped_copies(sides["torchvision"]["copies"])
    for name, side in sides.items():
        lines.append(f"  copies and casts of {name}" + (
            "" if name == "torchvision" else " (* where torchvision's step makes none alike)"))
        grouped = grouped_copies(side["copies"])
        for what, count in sorted(grouped.items(), key=lambda item: (-item[1], item[0])):
            star = "*" if name != "torchvision" and what not in peer else " "
            lines.append(f"   {star}{count:4d}  {what}")
    return "\n".join(lines)
