"""Benchmarks, each a ratio of two pipelines measured side by side in one run.

    python scripts/bench.py loader [--images 160] [--workers auto]
    python scripts/bench.py cache        # a folder of small images: cache false / auto
    python scripts/bench.py trainer      # our training loop / a bare PyTorch loop
    python scripts/bench.py encoders     # training images/s: simple / a timm encoder
    python scripts/bench.py peer [--steps N] [--warmup N]  # our ResNet-50 FCNs / torchvision
    python scripts/bench.py upsample [--json PATH]  # transposed conv by phases; upsamplers
    python scripts/bench.py audit [--precision P]  # one training step's ops: ours / torchvision
    python scripts/bench.py all          # every benchmark; writes BENCHMARKS.md

``loader``: images/s of the VOC training recipe at 512 crop (seg's VOC reader and
albumentations pipeline, through ``seg.data.loader.build_loader``) beside a torchvision
reference-script style pipeline (PIL decode, PIL RandomResize, RandomHorizontalFlip,
RandomCrop, PILToTensor, ToDtype, Normalize; references/segmentation) on the same
generated VOC-sized files, the same number of workers and the same batch size.

``trainer``: steady-state images/s of ``seg.engine.Trainer.fit`` over a bare loop
(forward, loss, zero_grad, backward, step, scheduler step) on the default model (configs/),
the same batches of 8 160x160 crops held in memory; both warmed up first.

``encoders``: training images/s of ``Trainer.fit`` on make train's model and recipe with
the ``simple`` encoder and with ``model/encoder=timm`` (tf_efficientnet_lite0), fp32, the
same random batches held in memory, in alternating rounds.

``peer``: at equal precision, images/s, peak memory (resident set growth, or CUDA peak
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
is separate.

``upsample``: forward + backward milliseconds of the learned channel-wise transposed
convolution of seg's ``TransposedConvUpsampler`` (kernel 2f - f % 2, stride f, one kernel
per channel) at factors 2 to 32, computed by ``conv_transpose_by_phases`` and by the native
``conv_transpose2d``, at the training precision and memory format (channels_last): 21
channels, batch 8 to 512x512 on CUDA, batch 2 to 256x256 on the CPU. Then, for every
registered upsampler (default options) at factors 2, 8 and 32 on the study's class-score
maps (8 classes, batch 8 of ceil(112 / f) square, channels_last, the same precision): its
trainable parameters, forward + backward milliseconds of one call, and the bytes allocated
at the peak of that call beyond its input and parameters (CUDA's allocator count; on the
CPU, ``seg.study.cost.PeakMemory``: the storage of the tensors its operators return).
``--json PATH`` writes ``{device type: {factor: {"native": ms, "phases": ms}}, "upsamplers":
{device type: {name: {factor: {"parameters": n, "ms": ms, "peak_bytes": n}}}}}``.

``audit``: one training step (after two uncounted ones) of our ResNet-50 dilated to output
stride 8 and by FCN-8s skips, as ``Trainer.fit`` runs it, and of torchvision's
``fcn_resnet50`` in the bare loop, at one precision (``--precision``, default as the
Trainer resolves ``auto``), counted op by op by ``seg.engine.census.OpCensus``: by kind
(convolutions, matrix products, normalisations, copies and layout conversions, casts,
elementwise, reductions, optimizer kernels, views, other), host synchronisations and the
bytes the ops allocate; then every copy and cast, starred where torchvision's step makes
none like it. The peer benchmark's batch and crop for the device.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from seg.data.base import IGNORE_INDEX
from seg.data.loader import available_cpus, build_loader, resolve_num_workers
from seg.data.palette import flat_palette
from seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, train_transform
from seg.data.voc import VOCSegmentation
from seg.engine.device import synchronize
from seg.engine.hooks import Hook, Step
from seg.files import write_file, write_text

VOC_SIZES = ((500, 375), (375, 500), (500, 333), (500, 500))  # VOC's common (w, h)


# -- data ---------------------------------------------------------------------------------


def write_jpeg(path: Path, image: np.ndarray) -> None:
    """``image`` (float, 0-255) as a JPEG of quality 90, through seg.files."""
    pixels = image.clip(0, 255).astype(np.uint8)
    write_file(path, cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Random values on a coarse grid, upsampled smoothly: blobs of about size/cells."""
    coarse = rng.random((cells, cells * width // height + 1), dtype=np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def write_voc_like(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` VOC-sized samples in VOC layout: photo-like JPEGs (smooth regions, edges
    and sensor noise; about VOC's 100 kB per file) and 21-class palette masks, 255 outlines."""
    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for index in range(count):
        width, height = VOC_SIZES[index % len(VOC_SIZES)]
        regions = smooth_noise(rng, height, width, 4)
        mask = np.where(regions > 0.55, rng.integers(1, 21), 0).astype(np.uint8)
        outline = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((5, 5), np.uint8)) > 0
        colour = rng.integers(40, 215, (21, 3)).astype(np.float32)
        image = colour[mask] + 60 * (smooth_noise(rng, height, width, 16)[..., None] - 0.5)
        image += 40 * (smooth_noise(rng, height, width, 120)[..., None] - 0.5)  # texture
        image += rng.normal(0, 16, image.shape)
        mask[outline] = 255
        sample_id = f"2026_{index:06d}"
        write_jpeg(root / "JPEGImages" / f"{sample_id}.jpg", image)
        label = Image.fromarray(mask, mode="P")
        label.putpalette(flat_palette())
        write_file(root / "SegmentationClass" / f"{sample_id}.png",
                   lambda file, label=label: label.save(file, format="PNG"))
        ids.append(sample_id)
    write_text(root / "ImageSets" / "Segmentation" / "train.txt", "\n".join(ids) + "\n")
    return root


# -- torchvision's references/segmentation, written out -------------------------------------


def pad_if_smaller(image: Image.Image, size: int, fill: int = 0) -> Image.Image:
    from torchvision.transforms import functional as F

    width, height = image.size
    if min(width, height) >= size:
        return image
    return F.pad(image, [0, 0, max(size - width, 0), max(size - height, 0)], fill=fill)


class ReferenceTrainPreset:
    """references/segmentation/presets.py SegmentationPresetTrain (PIL backend)."""

    def __init__(self, base_size: int, crop_size: int) -> None:
        self.min_size, self.max_size = int(0.5 * base_size), int(2.0 * base_size)
        self.crop_size = crop_size

    def __call__(self, image: Image.Image, target: Image.Image) -> tuple:
        from torchvision import transforms as T
        from torchvision.transforms import functional as F

        size = random.randint(self.min_size, self.max_size)
        image = F.resize(image, size, antialias=True)
        target = F.resize(target, size, interpolation=T.InterpolationMode.NEAREST)
        if random.random() < 0.5:
            image, target = F.hflip(image), F.hflip(target)
        image = pad_if_smaller(image, self.crop_size)
        target = pad_if_smaller(target, self.crop_size, fill=255)
        crop = T.RandomCrop.get_params(image, (self.crop_size, self.crop_size))
        image, target = F.crop(image, *crop), F.crop(target, *crop)
        image = F.pil_to_tensor(image)
        target = torch.as_tensor(np.array(target), dtype=torch.int64)
        image = F.convert_image_dtype(image, torch.float)
        return F.normalize(image, mean=IMAGENET_MEAN, std=IMAGENET_STD), target


class ReferenceVOC(Dataset):
    """torchvision.datasets.VOCSegmentation's loading: PIL open, convert("RGB")."""

    def __init__(self, root: Path, transforms: Callable) -> None:
        self.root = root
        ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
        self.ids = ids
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple:
        image = Image.open(self.root / "JPEGImages" / f"{self.ids[index]}.jpg").convert("RGB")
        target = Image.open(self.root / "SegmentationClass" / f"{self.ids[index]}.png")
        return self.transforms(image, target)


def reference_collate(batch: list[tuple]) -> tuple:
    """references/segmentation/utils.py collate_fn (cat_list: pad to the largest)."""
    images, targets = zip(*batch, strict=True)

    def cat_list(tensors: Sequence[torch.Tensor], fill: int) -> torch.Tensor:
        shape = tuple(max(sizes) for sizes in zip(*[t.shape for t in tensors], strict=True))
        out = tensors[0].new_full((len(tensors), *shape), fill)
        for tensor, padded in zip(tensors, out, strict=True):
            padded[..., : tensor.shape[-2], : tensor.shape[-1]].copy_(tensor)
        return out

    return cat_list(images, 0), cat_list(targets, 255)


def reference_loader(root: Path, batch_size: int, workers: int, crop: int) -> DataLoader:
    dataset = ReferenceVOC(root, ReferenceTrainPreset(base_size=520, crop_size=crop))
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                      collate_fn=reference_collate, drop_last=True)


# -- measurement ----------------------------------------------------------------------------


def images_per_second(loader: DataLoader, images: int, warmup_batches: int = 2) -> float:
    """Steady-state throughput: worker start-up and the first batches are not counted."""
    batches = iter(loader)
    for _ in range(warmup_batches):
        next(batches)
    seen, start = 0, time.perf_counter()
    while seen < images:
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            continue
        seen += len(batch["mask"] if isinstance(batch, dict) else batch[1])
    return seen / (time.perf_counter() - start)


def bench_loader(images: int = 160, workers: int | str = "auto", batch_size: int = 8,
                 crop: int = 512, files: int = 96) -> dict:
    """Our VOC recipe vs the reference pipeline on the same files; images/s of each."""
    workers = resolve_num_workers(workers)
    with tempfile.TemporaryDirectory() as folder:
        root = write_voc_like(Path(folder), files)
        ours = build_loader(
            VOCSegmentation(root, "train", transform=train_transform(
                crop, scale_range=(0.5, 2.0), base_size=512, color_jitter=0.0)),
            batch_size, train=True, num_workers=workers)
        reference = reference_loader(root, batch_size, workers, crop)
        ours_rate = images_per_second(ours, images)
        reference_rate = images_per_second(reference, images)
        del ours, reference  # stop the persistent workers before the folder goes
    return {"ours": ours_rate, "reference": reference_rate, "ratio": ours_rate / reference_rate,
            "workers": workers, "batch_size": batch_size, "crop": crop}


def write_small_folder(root: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` photo-like ``size``-px JPEGs with 3-class PNG masks, in the folder layout
    (images/, masks/, classes.yaml), every one in the train split."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    write_text(root / "classes.yaml",
               "classes:\n- {name: background}\n- {name: a}\n- {name: b}\n")
    for index in range(count):
        regions = smooth_noise(rng, size, size, 4)
        mask = np.digitize(regions, [0.4, 0.6]).astype(np.uint8)
        image = 80 * mask[..., None] + 120 * smooth_noise(rng, size, size, 16)[..., None]
        image = image + rng.normal(0, 12, (size, size, 3))
        write_jpeg(root / "images" / f"s{index:04d}.jpg", image)
        write_file(root / "masks" / f"s{index:04d}.png", cv2.imencode(".png", mask)[1].tobytes())
    names = "".join(f"s{index:04d}\n" for index in range(count))
    write_text(root / "splits" / "train.txt", names)
    write_text(root / "splits" / "val.txt", "s0000\n")
    return root


def bench_cache(images: int = 300, size: int = 128, epochs: int = 3) -> dict:
    """Samples/s per epoch of a folder dataset of small images through the training
    recipe (crop ``size``, one process, batch 8), with ``cache=False`` and ``"auto"``."""
    from seg.data.folder import FolderSegmentation

    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        root = write_small_folder(Path(folder) / "folder", images, size)
        for mode in (False, "auto"):
            dataset = FolderSegmentation(root, "train", cache=mode, transform=train_transform(
                size, scale_range=(0.5, 2.0), base_size=size, color_jitter=0.0))
            loader = build_loader(dataset, 8, train=True, num_workers=0)
            rates[str(mode).lower()] = [epoch_rate(loader, epoch) for epoch in range(epochs)]
    return {"images": images, "size": size, "rates": rates}


def epoch_rate(loader: DataLoader, epoch: int) -> float:
    loader.sampler.set_epoch(epoch)
    start = time.perf_counter()
    seen = sum(len(batch["mask"]) for batch in loader)
    return seen / (time.perf_counter() - start)


# -- trainer overhead ------------------------------------------------------------------------


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from seg.cli.common import CONFIG_MODULE

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides))


def random_batches(count: int, batch: int, size: int, classes: int, seed: int = 0,
                   pin: bool = False) -> list:
    """``count`` batches of random images and masks; ``pin``: in page-locked memory, as a
    CUDA DataLoader (pin_memory=True) hands them over."""
    generator = torch.Generator().manual_seed(seed)
    batches = [{"image": torch.randn(batch, 3, size, size, generator=generator),
                "mask": torch.randint(0, classes, (batch, size, size), generator=generator),
                "id": [str(i) for i in range(batch)]} for _ in range(count)]
    if pin:
        for item in batches:
            item["image"], item["mask"] = item["image"].pin_memory(), item["mask"].pin_memory()
    return batches


class SteadyRate(Hook):
    """Images/s of the steps after the first ``warmup`` of a fit, from the running rate that
    fit reports after each step (which counts the steps alone, batch waits included)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.marks = {0: 0.0}  # iteration: seconds of the steps so far per image of a batch

    def after_step(self, step: Step) -> None:
        if step.iteration in (self.warmup, step.max_iters):
            self.marks[step.iteration] = step.iteration / step.images_per_s

    def images_per_s(self) -> float:
        end = max(self.marks)
        return (end - self.warmup) / (self.marks[end] - self.marks[self.warmup])


def fit_images_per_second(cfg, model, batches, device: torch.device, folder: Path,
                          warmup: int = 5, steps: int | None = None,
                          val: list | None = None) -> float:
    """Images/s of ``Trainer.fit`` over ``steps`` steps (default: one per batch of the list)
    after ``warmup`` steps of the same fit, on ``batches``: a list of batches (cycled) or a
    DataLoader, which so runs on without a new epoch's start. Evaluation (on ``val``,
    default the first batch) and checkpoints are excluded, as fit itself counts them out."""
    from hydra.utils import instantiate

    from seg.engine import RunInfo
    from seg.engine.tensorboard import NullLogger

    classes = int(model.decoder.score[-1].out_channels)
    info = RunInfo(class_names=[str(i) for i in range(classes)], palette=[[0, 0, 0]] * classes,
                   mean=[0.0] * 3, std=[1.0] * 3)
    iters = warmup + (steps or len(batches))
    trainer = instantiate(cfg.trainer, max_iters=iters, eval_every=iters, progress=False,
                          device=str(device))
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    scheduler = instantiate(cfg.scheduler, total_iters=iters)(optimizer=optimizer)
    rate = SteadyRate(warmup)
    trainer.fit(model, optimizer, scheduler, batches, batches[:1] if val is None else val,
                folder, NullLogger(), info, hooks=[rate])
    return rate.images_per_s()


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


def bench_trainer(steps: int = 40, rounds: int = 4) -> dict:
    """Ours vs bare in ``rounds`` back-to-back pairs, alternating which goes first, so that
    the machine's drift hits both; the median of the pairs' ratios."""
    from seg.engine import resolve_device
    from seg.training import model_from_config

    cfg = compose("trainer.precision=32")  # what the bare loop runs too
    device = resolve_device("auto")
    batches = random_batches(steps, cfg.dataset.batch_size, cfg.dataset.crop_size,
                             cfg.dataset.num_classes)

    def fresh_model():
        torch.manual_seed(0)
        return model_from_config(cfg.model, cfg.dataset.num_classes)

    ours, bare = [], []
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(rounds):
            for side in ("ours", "bare") if round_ % 2 == 0 else ("bare", "ours"):
                if side == "ours":
                    ours.append(fit_images_per_second(cfg, fresh_model(), batches, device,
                                                      Path(folder)))
                else:
                    bare.append(bare_images_per_second(cfg, fresh_model(), batches, device))
    ratios = [o / b for o, b in zip(ours, bare, strict=True)]
    return {"ours": statistics.median(ours), "bare": statistics.median(bare),
            "ratio": statistics.median(ratios), "ratios": ratios, "steps": steps,
            "batch": cfg.dataset.batch_size, "size": cfg.dataset.crop_size,
            "device": str(device)}


# -- encoders --------------------------------------------------------------------------------

ENCODER_SIDES = {  # make train's model with each encoder
    "simple": ("model/encoder=simple",),
    "timm tf_efficientnet_lite0": ("model/encoder=timm",
                                   "model.encoder.model_name=tf_efficientnet_lite0"),
}


def bench_encoders(steps: int = 20, rounds: int = 2) -> dict:
    """Training images/s of ``Trainer.fit`` with each encoder of :data:`ENCODER_SIDES`
    (make train's recipe otherwise, fp32, random init), in ``rounds`` alternating rounds;
    the median of each. timm's side is left out where timm is not installed."""
    from seg.engine import resolve_device
    from seg.training import model_from_config

    device = resolve_device("auto")
    sides = {name: compose("trainer.precision=32", *overrides)
             for name, overrides in ENCODER_SIDES.items()
             if "timm" not in name or importlib.util.find_spec("timm") is not None}
    first = next(iter(sides.values()))
    batches = random_batches(steps, first.dataset.batch_size, first.dataset.crop_size,
                             first.dataset.num_classes)
    rates: dict[str, list[float]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(rounds):
            for name in (list(sides) if round_ % 2 == 0 else list(sides)[::-1]):
                torch.manual_seed(0)
                model = model_from_config(sides[name].model, sides[name].dataset.num_classes)
                rates[name].append(fit_images_per_second(sides[name], model, batches,
                                                         device, Path(folder)))
    return {"rates": {name: statistics.median(r) for name, r in rates.items()},
            "parameters": {name: sum(p.numel() for p in model_from_config(
                cfg.model, cfg.dataset.num_classes).encoder.parameters())
                for name, cfg in sides.items()},
            "batch": first.dataset.batch_size, "size": first.dataset.crop_size,
            "decoder": first.model.decoder.name, "device": device_name(device)}


def encoders_report(result: dict) -> str:
    lines = [f"Encoders: training images/s of Trainer.fit, {result['decoder']}, batch "
             f"{result['batch']} at {result['size']} px, fp32, random init "
             f"({result['device']})"]
    for name, rate in result["rates"].items():
        lines.append(f"  {name:28s} {result['parameters'][name]:>10,} encoder params "
                     f"{rate:8.1f} images/s")
    return "\n".join(lines)


def run_encoders(args: argparse.Namespace) -> str:
    return encoders_report(bench_encoders())


# -- peer ------------------------------------------------------------------------------------

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
# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, by a substring of the device name.
PEAK_BF16_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L40S": 362e12}
PRECISION_NAMES = {"32": "fp32", "bf16": "bf16", "16": "fp16"}


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


def peak_bf16_flops(device_name: str) -> float | None:
    """The dense bf16 peak FLOP/s of a GPU by its name; None for one not in the table."""
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in device_name), None)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({machine()})"


def resident_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_mb(device: torch.device, baseline: float) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resident_mb() - baseline


def peer_loss(output, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; torchvision's dict output adds its auxiliary head's, weighted 0.5 as
    references/segmentation/train.py weights it."""
    loss = torch.nn.functional.cross_entropy
    if isinstance(output, dict):
        return (loss(output["out"], target, ignore_index=IGNORE_INDEX)
                + 0.5 * loss(output["aux"], target, ignore_index=IGNORE_INDEX))
    return loss(output, target, ignore_index=IGNORE_INDEX)


def step_flops(model: torch.nn.Module, batch: dict, device: torch.device, precision: str,
               memory_format: torch.memory_format = torch.channels_last) -> float:
    """FLOPs of one training step's forward and backward of ``model`` on ``batch``, counted
    by FlopCounterMode (convolutions and matrix products) at ``precision``."""
    from torch.utils.flop_counter import FlopCounterMode

    from seg.engine.precision import autocast

    model.train()
    images = batch["image"].to(device, memory_format=memory_format)
    target = batch["mask"].to(device)
    with FlopCounterMode(display=False) as counter:
        with autocast(device, precision):
            loss = peer_loss(model(images), target)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


class SideRun(NamedTuple):
    """What one side of ``peer`` measured, and how to count its model's FLOPs afterwards.
    (Not a dataclass: the tests load this script without registering it as a module.)"""

    images_per_s: float
    precision: str
    count_flops: Callable[[], float]
    notes: dict | None = None  # more to report


def timed_loop_images_per_second(step: Callable[[dict], None], batches: list, warmup: int,
                                 device: torch.device) -> float:
    """Images/s of ``step`` over ``batches`` after ``warmup`` steps, the GPU's queue drained
    before and after."""
    for index in range(warmup):
        step(batches[index % len(batches)])
    synchronize(device)
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    synchronize(device)
    return len(batches) * len(batches[0]["mask"]) / (time.perf_counter() - start)


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
    model = fcn_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    model.to(device, memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_steps, power=0.9)

    def step(batch: dict) -> None:
        images = batch["image"].to(device, non_blocking=fast, memory_format=memory_format)
        target = batch["mask"].to(device, non_blocking=fast)
        with autocast(device, precision):
            loss = peer_loss(model(images), target)
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
    from seg.training import model_from_config

    on_cpu = ("trainer.precision=32",) if device.type != "cuda" else ()
    cfg = compose(*PEER_SIDES[name], *on_cpu)
    model = model_from_config(cfg.model, 21)
    loader, notes = batches, {}
    if name == E2E:
        settings = peer_settings(device.type)
        files = e2e_files(len(batches[0]["mask"]), warmup, steps, settings["max_files"])
        loader, workers = voc_training_loader(folder, len(batches[0]["mask"]),
                                              batches[0]["mask"].shape[-1], files, device)
        notes = {"workers": workers, "files": files}
    rate = fit_images_per_second(cfg, model, loader, device, folder, warmup, steps,
                                 val=batches[:1])
    del loader  # stops the persistent workers
    precision = resolve_precision(cfg.trainer.precision, device)
    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    return SideRun(rate, precision,
                   lambda: step_flops(model, batches[0], device, precision, memory_format),
                   notes)


def peer_side(name: str, steps: int | None = None, warmup: int | None = None) -> dict:
    """One side of ``peer``, run in its own process: images/s, peak memory growth (both
    measured before the FLOPs are counted) and FLOPs per image of a training step."""
    from seg.engine import resolve_device

    device = resolve_device("auto")
    settings = peer_settings(device.type)
    batch, size = settings["batch"], settings["size"]
    steps = steps or settings["steps"]
    warmup = settings["warmup"] if warmup is None else warmup
    # the end-to-end side needs one in-memory batch: for evaluation and the FLOP count
    batches = random_batches(1 if name == E2E else steps, batch, size, 21,
                             pin=device.type == "cuda")
    baseline = resident_mb()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        if name.startswith("torchvision"):
            run = torchvision_side(name, batches, warmup, device)
        else:
            run = ours_side(name, batches, steps, warmup, device, Path(folder))
        memory = peak_mb(device, baseline)
    return {"images_per_s": run.images_per_s, "peak_mb": memory, "precision": run.precision,
            "flops_per_image": run.count_flops() / batch, "batch": batch, "size": size,
            "steps": steps, "warmup": warmup, "device": device.type,
            "device_name": device_name(device), **(run.notes or {})}


def add_peer_ratios(results: dict) -> dict:
    """Speed ratio to the ``torchvision`` side, achieved TFLOP/s and MFU (None where the
    GPU's peak is unknown, and on the CPU) of each side; the end-to-end side's ratio to
    the same model's in-memory rate."""
    baseline = results["torchvision"]["images_per_s"]
    for result in results.values():
        result["ratio"] = result["images_per_s"] / baseline
        achieved = result["flops_per_image"] * result["images_per_s"]
        result["tflops"] = achieved / 1e12
        peak = peak_bf16_flops(result["device_name"]) if result["device"] == "cuda" else None
        result["mfu"] = None if peak is None else achieved / peak
    if E2E in results and "ours-os8" in results:
        results[E2E]["in_memory_ratio"] = (results[E2E]["images_per_s"]
                                           / results["ours-os8"]["images_per_s"])
    return results


def bench_peer(steps: int | None = None, warmup: int | None = None) -> dict:
    """Every side of ``peer`` in its own process; steps and warm-up default per device."""
    settings = peer_settings("cuda" if torch.cuda.is_available() else "cpu")
    steps = steps or settings["steps"]
    warmup = settings["warmup"] if warmup is None else warmup
    results = {}
    for name in PEER_SIDES:
        done = subprocess.run(
            [sys.executable, "-P", __file__, "peer-side", name, "--steps", str(steps),
             "--warmup", str(warmup)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"peer side {name} failed ({done.returncode}):\n"
                               + done.stderr[-4000:])
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return add_peer_ratios(results)


# -- audit ---------------------------------------------------------------------------------


AUDIT_SIDES = ("ours-os8", "ours-fcn8s", "torchvision")


def ours_loop(name: str, device: torch.device, precision: str
              ) -> tuple[torch.nn.Module, Callable[[dict], None]]:
    """Our model and one step as ``Trainer.fit`` runs it: ``train_step``, the loss kept on
    the device (``LossWindow.add``), the scheduler's step."""
    from hydra.utils import instantiate

    from seg.engine import LossWindow
    from seg.training import loss_from_config, model_from_config

    cfg = compose(*PEER_SIDES[name], f"trainer.precision={precision}")
    trainer = instantiate(cfg.trainer, device=str(device), progress=False)
    model = model_from_config(cfg.model, 21)
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


def audit_side(name: str, batch: dict, device: torch.device, precision: str) -> dict:
    """One training step of side ``name`` counted by ``seg.engine.census.OpCensus``, after
    two uncounted steps (the optimizer's state is made, the first step's read-back done)."""
    from seg.engine.census import OpCensus

    torch.manual_seed(0)
    if name.startswith("torchvision"):
        model, step, _, _ = torchvision_loop(name, device, 10, precision)
    else:
        model, step = ours_loop(name, device, precision)
    step(batch)
    step(batch)
    census = OpCensus()
    with census, census.within(model):
        step(batch)
    return {"counts": dict(census.counts), "copies": dict(census.copies),
            "sync_ops": dict(census.sync_ops), "allocated_mb": census.allocated_bytes / 2**20}


def bench_audit(device: torch.device, precision: str) -> dict:
    """:func:`audit_side` for every side of :data:`AUDIT_SIDES` on one batch of the peer
    benchmark's size for ``device``."""
    settings = peer_settings(device.type)
    batch = random_batches(1, settings["batch"], settings["size"], 21)[0]
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


def audit_report(result: dict) -> str:
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


# -- upsample --------------------------------------------------------------------------------

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


def median_ms(run: Callable[[], None], device: torch.device, warmup: int,
              repeats: int) -> float:
    """Median milliseconds of ``run`` over ``repeats`` calls after ``warmup`` calls, each
    timed from an empty GPU queue to an empty one."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def forward_backward(path: Callable[[dict], torch.Tensor], case: dict, device: torch.device,
                     precision: str) -> None:
    from seg.engine.precision import autocast

    case["x"].grad = case["weight"].grad = None
    with autocast(device, precision):
        output = path(case)
    output.backward(case["grad"])


def bench_upsample(device: torch.device | None = None, settings: dict | None = None,
                   factors: Sequence[int] = UPSAMPLE_FACTORS) -> dict:
    """``{device type: {factor: {"native": ms, "phases": ms}}}``: median forward + backward
    milliseconds of both ways. ``settings``: ``upsample_settings``'s, with ``precision``
    (default: the one Trainer picks, ``auto``)."""
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
    return {device.type: timings}


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


def bench_upsamplers(device: torch.device, settings: dict | None = None,
                     factors: Sequence[int] = UPSAMPLER_FACTORS,
                     names: Sequence[str] | None = None) -> dict:
    """``{"upsamplers": {device type: {name: {factor: upsampler_cost}}}}`` for ``names``
    (default: every registered upsampler). ``settings``: ``upsampler_settings``'s, with
    ``precision`` (a resolved one: 32, bf16 or 16)."""
    from seg.models import UPSAMPLERS

    settings = {**upsampler_settings(device.type), "precision": "32", **(settings or {})}
    rows = {name: {factor: upsampler_cost(upsampler_case(name, factor, settings, device),
                                          device, settings)
                   for factor in factors}
            for name in (names or sorted(UPSAMPLERS))}
    return {"upsamplers": {device.type: rows}}


def faster_path(timing: dict) -> str:
    """``phases (1.23x)``: the faster way, and how many times faster it is."""
    fast, slow = sorted(timing, key=timing.get)
    return f"{fast} ({timing[slow] / timing[fast]:.2f}x)"


# -- reports ---------------------------------------------------------------------------------


def trainer_report(result: dict) -> str:
    return "\n".join([
        f"Trainer overhead: default model, batch {result['batch']} of {result['size']}x"
        f"{result['size']} in memory, {len(result['ratios'])} x {result['steps']} steps "
        f"each, {result['device']} (medians)",
        f"  seg Trainer.fit:                           {result['ours']:7.1f} images/s",
        f"  bare PyTorch loop:                         {result['bare']:7.1f} images/s",
        f"  ratio:                                     {result['ratio']:7.3f}   (target >= 0.95)",
        "  ratio of each pair:                        "
        + ", ".join(f"{r:.3f}" for r in result["ratios"]),
    ])


def peer_row(name: str, result: dict) -> str:
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


def peer_report(results: dict) -> str:
    first = results["torchvision"]
    cuda = first["device"] == "cuda"
    peak = peak_bf16_flops(first["device_name"]) if cuda else None
    peak_text = "unknown for this GPU" if peak is None else f"{peak / 1e12:.1f} TFLOP/s"
    mfu_text = f"of the dense bf16 peak ({peak_text})" if cuda else "n/a on the CPU"
    lines = [
        f"Peer: ResNet-50 FCNs at equal precision, batch {first['batch']} of {first['size']}x"
        f"{first['size']}, 21 classes, {first['steps']} timed steps after {first['warmup']} "
        f"warm-up, {first['device_name']}",
        f"  ratio: speed vs the torchvision bare loop; MFU: {mfu_text}",
        f"  {'':<52} {'prec.':<5} {'images/s':>8} {'peak MB':>8} {'TFLOP/s':>8} "
        f"{'MFU':>6}  ratio",
        *(peer_row(name, result) for name, result in results.items()),
        "  torchvision bare loop: channels_last model and inputs"
        + (", bf16 autocast, cudnn.benchmark" if cuda else ", fp32"),
        "  end to end: the VOC recipe, workers as seg-train picks them; over a short run the",
        "  2 batches each worker prefetches hide part of a slower loader (Loader: its own rate)",
        "  target: same backbone >= 1.25x, FCN-8s >= 1.5x, end to end >= 0.95x of in-memory"
        if cuda else "  target: FCN-8s >= 1.8x",
    ]
    return "\n".join(lines)


def upsample_report(timings: dict, settings: dict) -> str:
    """``settings``: those ``bench_upsample`` ran with, and the resolved ``precision`` and
    the ``device_name``."""
    ((_, rows),) = timings.items()
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


def upsamplers_report(costs: dict, settings: dict) -> str:
    """``costs``: ``bench_upsamplers``'s; ``settings``: those it ran with and the
    ``device_name``."""
    ((_, rows),) = costs["upsamplers"].items()
    factors = list(next(iter(rows.values())))
    size = settings["size"]
    lines = [
        f"Upsamplers: every registered one, default options, on the study's class-score maps: "
        f"{settings['channels']} channels, batch {settings['batch']} of ceil({size} / f) "
        f"square to f times it, channels_last, {PRECISION_NAMES[settings['precision']]}, "
        f"{settings['device_name']}",
        f"  params: trainable; ms: forward + backward, median of {settings['repeats']} after "
        f"{settings['warmup']} warm-up; MiB: allocated at the call's peak beyond its input",
        "  and parameters (" + ("torch.cuda.max_memory_allocated" if "cuda" in costs["upsamplers"]
                                else "storage of the tensors its operators return") + ")",
        f"  {'':<16}" + "".join(f"  {'x' + str(f):>7} {'':>8} {'':>7}" for f in factors),
        f"  {'upsampler':<16}" + "  {:>7} {:>8} {:>7}".format("params", "ms", "MiB")
        * len(factors),
        *(f"  {name:<16}" + "".join(f"  {c['parameters']:7d} {c['ms']:8.2f} "
                                    f"{c['peak_bytes'] / 2**20:7.1f}" for c in row.values())
          for name, row in rows.items()),
    ]
    return "\n".join(lines)


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {available_cpus()} CPUs, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def loader_report(result: dict) -> str:
    return "\n".join([
        f"Loader: VOC train recipe, {result['crop']} crop, batch {result['batch_size']}, "
        f"{result['workers']} workers ({machine()})",
        f"  seg (cv2 decode, albumentations):          {result['ours']:7.1f} images/s",
        f"  torchvision reference style (PIL):         {result['reference']:7.1f} images/s",
        f"  ratio:                                     {result['ratio']:7.2f}x  (target >= 1.5x)",
    ])


# -- command line ----------------------------------------------------------------------------


def run_loader(args: argparse.Namespace) -> str:
    workers = args.workers if args.workers == "auto" else int(args.workers)
    return loader_report(bench_loader(args.images, workers))


def run_cache(args: argparse.Namespace) -> str:
    result = bench_cache()
    lines = [f"dataset.cache: a folder of {result['images']} JPEGs of {result['size']} px, "
             "the training recipe, one process (num_workers=0), batch 8; samples/s per epoch "
             f"({platform.processor() or platform.machine()}, {available_cpus()} cores)"]
    for mode, rates in result["rates"].items():
        lines.append(f"  cache={mode:5s} " + "  ".join(f"epoch {i + 1}: {rate:6.0f}"
                                                   for i, rate in enumerate(rates)))
    return "\n".join(lines)


def run_trainer(args: argparse.Namespace) -> str:
    return trainer_report(bench_trainer())


def run_peer(args: argparse.Namespace) -> str:
    return peer_report(bench_peer(args.steps, args.warmup))


def run_audit(args: argparse.Namespace) -> str:
    from seg.engine import resolve_device, resolve_precision

    device = resolve_device("auto")
    return audit_report(bench_audit(device, resolve_precision(args.precision, device)))


def run_upsample(args: argparse.Namespace) -> str:
    from seg.engine import resolve_device, resolve_precision

    device = resolve_device("auto")
    settings = {**upsample_settings(device.type),
                "precision": resolve_precision(args.precision, device)}
    timings = bench_upsample(device, settings)
    costs_settings = {**upsampler_settings(device.type), "precision": settings["precision"]}
    costs = bench_upsamplers(device, costs_settings)
    if args.json is not None:
        write_text(args.json, json.dumps({**timings, **costs}, indent=2) + "\n")
    named = {"device_name": device_name(device)}
    return "\n\n".join([upsample_report(timings, {**settings, **named}),
                         upsamplers_report(costs, {**costs_settings, **named})])


BENCHMARKS = {"loader": run_loader, "cache": run_cache, "trainer": run_trainer,
              "encoders": run_encoders, "peer": run_peer, "upsample": run_upsample,
              "audit": run_audit}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=(*BENCHMARKS, "all", "peer-side"))
    parser.add_argument("side", nargs="?", choices=tuple(PEER_SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None,
                        help="peer: timed steps per side (default 30 on CUDA, 5 on the CPU)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="peer: warm-up steps per side (default 10 on CUDA, 2 on the CPU)")
    parser.add_argument("--images", type=int, default=160, help="images timed per pipeline")
    parser.add_argument("--workers", default="auto", help="DataLoader workers (both sides)")
    parser.add_argument("--precision", default="auto",
                        help="upsample, audit: 32, bf16, 16 or auto (as Trainer resolves it)")
    parser.add_argument("--json", type=Path, default=None,
                        help="upsample: write {device type: {factor: {native, phases ms}}, "
                             "upsamplers: {device type: {name: {factor: {parameters, ms, "
                             "peak_bytes}}}}}")
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"),
                        help="where `all` writes its report")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.benchmark == "peer-side":  # one side of `peer`, in its own process
        print(json.dumps(peer_side(args.side, args.steps, args.warmup)))
        return 0
    reports = []
    for name, run in BENCHMARKS.items():
        if args.benchmark in (name, "all"):
            reports.append(run(args))
            print(reports[-1], flush=True)
    if args.benchmark == "all":
        write_section(args.output, device_heading(), "\n\n".join(reports))
        print(f"wrote {args.output}")
    return 0


def device_heading() -> str:
    """The section of BENCHMARKS.md that this machine's figures go to."""
    if torch.cuda.is_available():
        return f"## {torch.cuda.get_device_name()}"
    return f"## CPU: {platform.processor() or platform.machine()}, {available_cpus()} CPUs"


def write_section(path: Path, heading: str, report: str) -> None:
    """Put ``report`` under ``heading`` in ``path``, keeping the other machines' sections:
    figures from a GPU machine stay when `make bench` runs on a CPU one."""
    text = path.read_text() if path.is_file() else ""
    sections = {}
    for chunk in text.split("\n## ")[1:]:
        title, _, body = chunk.partition("\n")
        sections[f"## {title}"] = body.strip("\n")
    sections[heading] = ("Written by `make bench` (`python scripts/bench.py all`).\n\n"
                         f"```\n{report}\n```")
    write_text(path, "# Benchmarks\n\n" + "\n\n".join(
        f"{title}\n\n{body}" for title, body in sections.items()) + "\n")


if __name__ == "__main__":
    sys.exit(main())
