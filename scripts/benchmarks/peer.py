"""``peer``: at equal precision, images/s, peak memory (resident set growth, or CUDA peak
allocation), achieved TFLOP/s and model FLOPs utilisation (MFU: FLOPs of one training step
per image, counted by ``torch.utils.flop_counter.FlopCounterMode``, times images/s, over
the GPU's dense bf16 peak) of our ResNet-50 FCNs (FCN-8s, and dilated to output stride 8
as torchvision's backbone is) trained by ``Trainer.fit`` with the default precision (bf16
on CUDA; fp32, ``trainer.precision=32``, on the CPU), beside torchvision's
``fcn_resnet50`` (with the auxiliary head, as torchvision's reference trains it) in the
fastest bare loop a user would write: channels_last model and inputs, and on CUDA bf16
autocast and ``cudnn.benchmark``; the ratio is to that loop. Also shown: torchvision's
reference fp32 loop, and the stride-8 model trained end to end from a real loader (seg's
VOC reader and training recipe on generated JPEG files, workers as ``seg-train`` picks
them), as a ratio to its in-memory rate. 21 classes, batch 8 of 512x512 with 30 timed steps
after 10 warm-up steps on CUDA (cuDNN tunes its algorithms during the warm-up), batch 2 of
256x256 with 5 after 2 on the CPU. Each side runs in its own process, so that their memory
is separate."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader

from seg.data.loader import build_loader, resolve_num_workers
from seg.data.readers.voc import VOCSegmentation
from seg.data.transforms import train_transform

from .data import random_batches, write_voc_like
from .flops import peak_bf16_flops, step_flops, utilisation
from .harness import (
    PRECISION_NAMES,
    compose,
    device_name,
    peak_mb,
    resident_mb,
    timed_loop_images_per_second,
)
from .reference import reference_criterion
from .training import fit_images_per_second

ENTRY = Path(__file__).resolve().parents[1] / "bench.py"  # each side runs `bench.py peer-side`
E2E = "ours-os8-e2e"
# The config overrides of our sides. They name FCN-8s: make train's FCN-4s would add a
# stride-4 skip that torchvision's model does not have.
PEER_SIDES = {
    "ours-fcn8s": ("model/encoder=resnet50", "model/decoder=fcn8s"),
    "ours-os8": ("model/encoder=resnet50", "model/decoder=fcn8s", "model.encoder.output_stride=8"),
    E2E: ("model/encoder=resnet50", "model/decoder=fcn8s", "model.encoder.output_stride=8"),
    "torchvision": (),  # the bare loop at our precision: the baseline of the ratios
    "torchvision-fp32": (),  # torchvision's reference training loop, fp32
}
PEER_LABELS = {
    "ours-fcn8s": "seg resnet50 FCN-8s (stride-8 output by skips)",
    "ours-os8": "seg resnet50 dilated to output stride 8",
    E2E: "  the same, end to end from JPEG files",
    "torchvision": "torchvision fcn_resnet50, bare loop",
    "torchvision-fp32": "torchvision fcn_resnet50, fp32 reference loop",
}
CLASSES = 21  # VOC's, as torchvision's reference trains fcn_resnet50


def peer_settings(device_type: str) -> dict:
    """Batch, crop, warm-up and timed steps, and the most JPEG files of the end-to-end
    side: cuDNN tunes its algorithms during the warm-up, and a GPU step is short."""
    if device_type == "cuda":
        return {"batch": 8, "size": 512, "warmup": 10, "steps": 30, "max_files": 400}
    return {"batch": 2, "size": 256, "warmup": 2, "steps": 5, "max_files": 40}


def e2e_files(batch: int, warmup: int, steps: int, max_files: int) -> int:
    """JPEG files for the end-to-end side: one epoch for all its steps, up to ``max_files``
    (the loader then starts another epoch), and at least one batch."""
    return max(batch, min(max_files, batch * (warmup + steps)))


class SideRun(NamedTuple):
    """What one side of ``peer`` measured, and how to count its model's FLOPs afterwards."""

    images_per_s: float
    precision: str
    count_flops: Callable[[], float]
    notes: dict | None = None  # more to report


def torchvision_loop(name: str, device: torch.device, total_steps: int, precision: str | None
                     = None) -> tuple[torch.nn.Module, Callable[[dict], None], str,
                                      torch.memory_format]:
    """torchvision's fcn_resnet50 with its reference's SGD and poly schedule: the model,
    one training step, its precision and memory format. ``torchvision``: the fastest bare
    loop (channels_last; on CUDA also bf16 autocast and cuDNN's tuned algorithms), or at
    ``precision`` when given; ``torchvision-fp32``: references/segmentation/train.py's
    fp32 loop."""
    from torchvision.models.segmentation import fcn_resnet50

    from seg.engine.precision import autocast

    fast = name == "torchvision"
    if precision is None:
        precision = "bf16" if fast and device.type == "cuda" else "32"
    memory_format = torch.channels_last if fast else torch.contiguous_format
    if fast and device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = fcn_resnet50(weights=None, weights_backbone=None, num_classes=CLASSES,
                         aux_loss=True)
    model.to(device, memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_steps, power=0.9)

    def step(batch: dict) -> None:
        images = batch["image"].to(device, non_blocking=fast, memory_format=memory_format)
        target = batch["mask"].to(device, non_blocking=fast)
        with autocast(device, precision):
            loss = reference_criterion(model(images), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

    return model, step, precision, memory_format


def torchvision_side(name: str, batches: list, warmup: int, device: torch.device) -> SideRun:
    """:func:`torchvision_loop`'s images/s."""
    model, step, precision, memory_format = torchvision_loop(name, device,
                                                             len(batches) + warmup)
    rate = timed_loop_images_per_second(step, batches, warmup, device)
    return SideRun(rate, precision,
                   lambda: step_flops(model, batches[0], device, precision, memory_format))


def voc_training_loader(folder: Path, batch: int, size: int, files: int,
                        device: torch.device) -> tuple[DataLoader, int]:
    """seg's VOC reader and training recipe at ``size`` crops on ``files`` generated JPEG
    files, loaded as seg-train loads them: its worker count, pinned memory on CUDA."""
    root = write_voc_like(folder / "voc", files)
    workers = resolve_num_workers("auto", device.type, size)
    dataset = VOCSegmentation(root, "train", transform=train_transform(
        size, scale_range=(0.5, 2.0), base_size=512, color_jitter=0.0))
    loader = build_loader(dataset, batch, train=True, num_workers=workers,
                          pin_memory=device.type == "cuda")
    return loader, workers


def ours_side(name: str, batches: list, steps: int, warmup: int, device: torch.device,
              folder: Path) -> SideRun:
    """Our model trained by ``Trainer.fit`` at the default precision on CUDA, fp32 on the
    CPU; the end-to-end side reads its batches from JPEG files instead of ``batches``."""
    from seg.engine import resolve_precision
    from seg.training import model_of

    on_cpu = ("trainer.precision=32",) if device.type != "cuda" else ()
    cfg = compose(*PEER_SIDES[name], *on_cpu)
    model = model_of(cfg.model, CLASSES)
    loader, notes = batches, {}
    if name == E2E:
        settings = peer_settings(device.type)
        files = e2e_files(len(batches[0]["mask"]), warmup, steps, settings["max_files"])
        loader, workers = voc_training_loader(folder, len(batches[0]["mask"]),
                                              batches[0]["mask"].shape[-1], files, device)
        notes = {"workers": workers, "files": files}
    rate = fit_images_per_second(cfg, model, loader, device, folder, CLASSES, warmup=warmup,
                                 steps=steps, val=batches[:1])
    del loader  # stops the persistent workers
    precision = resolve_precision(cfg.trainer.precision, device)
    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    return SideRun(rate, precision,
                   lambda: step_flops(model, batches[0], device, precision, memory_format),
                   notes)


def side(name: str, steps: int | None = None, warmup: int | None = None) -> dict:
    """One side of ``peer``, run in its own process: images/s, peak memory growth (both
    measured before the FLOPs are counted) and FLOPs per image of a training step."""
    from seg.engine import resolve_device

    device = resolve_device("auto")
    settings = peer_settings(device.type)
    batch, size = settings["batch"], settings["size"]
    steps = steps or settings["steps"]
    warmup = settings["warmup"] if warmup is None else warmup
    # the end-to-end side needs one in-memory batch: for evaluation and the FLOP count
    batches = random_batches(1 if name == E2E else steps, batch, size, CLASSES,
                             pin=device.type == "cuda")
    baseline = resident_mb()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        if name.startswith("torchvision"):
            measured = torchvision_side(name, batches, warmup, device)
        else:
            measured = ours_side(name, batches, steps, warmup, device, Path(folder))
        memory = peak_mb(device, baseline)
    return {"images_per_s": measured.images_per_s, "peak_mb": memory,
            "precision": measured.precision,
            "flops_per_image": measured.count_flops() / batch, "batch": batch, "size": size,
            "steps": steps, "warmup": warmup, "device": device.type,
            "device_name": device_name(device), **(measured.notes or {})}


def add_ratios(results: dict) -> dict:
    """Speed ratio to the ``torchvision`` side, achieved TFLOP/s and MFU (None where the
    GPU's peak is unknown, and on the CPU) of each side; the end-to-end side's ratio to
    the same model's in-memory rate."""
    baseline = results["torchvision"]["images_per_s"]
    for result in results.values():
        result["ratio"] = result["images_per_s"] / baseline
        result["tflops"], result["mfu"] = utilisation(
            result["flops_per_image"], result["images_per_s"], result["device"],
            result["device_name"])
    if E2E in results and "ours-os8" in results:
        results[E2E]["in_memory_ratio"] = (results[E2E]["images_per_s"]
                                           / results["ours-os8"]["images_per_s"])
    return results


def run(steps: int | None = None, warmup: int | None = None) -> dict:
    """Every side of ``peer`` in its own process (``bench.py peer-side``); steps and
    warm-up default per device."""
    settings = peer_settings("cuda" if torch.cuda.is_available() else "cpu")
    steps = steps or settings["steps"]
    warmup = settings["warmup"] if warmup is None else warmup
    results = {}
    for name in PEER_SIDES:
        done = subprocess.run(
            [sys.executable, "-P", str(ENTRY), "peer-side", name, "--steps", str(steps),
             "--warmup", str(warmup)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"peer side {name} failed ({done.returncode}):\n"
                               + done.stderr[-4000:])
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return add_ratios(results)


def row(name: str, result: dict) -> str:
    label = PEER_LABELS[name]
    if name == E2E:
        label += f" ({result['workers']} workers)"
    mfu = "n/a" if result["mfu"] is None else f"{100 * result['mfu']:.1f}%"
    ratio = f"{result['ratio']:.2f}x"
    if "in_memory_ratio" in result:
        ratio = f"{result['in_memory_ratio']:.2f}x of in-memory"
    return (f"  {label:<52} {PRECISION_NAMES[result['precision']]:<5} "
            f"{result['images_per_s']:8.2f} {result['peak_mb']:8.0f} {result['tflops']:8.2f} "
            f"{mfu:>6}  {ratio}")


def report(results: dict) -> str:
    first = results["torchvision"]
    cuda = first["device"] == "cuda"
    peak = peak_bf16_flops(first["device_name"]) if cuda else None
    peak_text = "unknown for this GPU" if peak is None else f"{peak / 1e12:.1f} TFLOP/s"
    mfu_text = f"of the dense bf16 peak ({peak_text})" if cuda else "n/a on the CPU"
    lines = [
        f"Peer: ResNet-50 FCNs at equal precision, batch {first['batch']} of {first['size']}x"
        f"{first['size']}, {CLASSES} classes, {first['steps']} timed steps after "
        f"{first['warmup']} warm-up, {first['device_name']}",
        f"  ratio: speed vs the torchvision bare loop; MFU: {mfu_text}",
        f"  {'':<52} {'prec.':<5} {'images/s':>8} {'peak MB':>8} {'TFLOP/s':>8} "
        f"{'MFU':>6}  ratio",
        *(row(name, result) for name, result in results.items()),
        "  torchvision bare loop: channels_last model and inputs"
        + (", bf16 autocast, cudnn.benchmark" if cuda else ", fp32"),
        "  end to end: the VOC recipe, workers as seg-train picks them; over a short run the",
        "  2 batches each worker prefetches hide part of a slower loader (Loader: its own rate)",
    ]
    return "\n".join(lines)
