"""Benchmarks, each a ratio of two pipelines measured side by side in one run.

    python scripts/bench.py loader [--images 160] [--workers auto]
    python scripts/bench.py trainer      # our training loop / a bare PyTorch loop
    python scripts/bench.py peer         # our ResNet-50 FCN / torchvision's fcn_resnet50
    python scripts/bench.py all          # every benchmark; writes BENCHMARKS.md

``loader``: images/s of the VOC training recipe at 512 crop (seg's VOC reader and
albumentations pipeline, through ``seg.data.loader.build_loader``) beside a torchvision
reference-script style pipeline (PIL decode, PIL RandomResize, RandomHorizontalFlip,
RandomCrop, PILToTensor, ToDtype, Normalize; references/segmentation) on the same
generated VOC-sized files, the same number of workers and the same batch size.

``trainer``: steady-state images/s of ``seg.engine.Trainer.fit`` over a bare loop
(forward, loss, zero_grad, backward, step, scheduler step) on the default model (configs/),
the same batches of 8 160x160 crops held in memory; both warmed up first.

``peer``: images/s and peak memory (resident set growth, or CUDA peak allocation) of our
ResNet-50 FCN trained by ``Trainer.fit`` with the default precision, beside torchvision's
``fcn_resnet50`` (with the auxiliary head, as torchvision's reference trains it) trained
by a reference-style fp32 loop: 21 classes, batch 2 of 256x256 on the CPU (batch 8 of
512x512 on CUDA). Each side runs in its own process, so that their memory is separate.
"""

from __future__ import annotations

import argparse
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

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from seg.data import VOCSegmentation, flat_palette, train_transform
from seg.data.base import IGNORE_INDEX
from seg.data.loader import available_cpus, build_loader, resolve_num_workers
from seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD

VOC_SIZES = ((500, 375), (375, 500), (500, 333), (500, 500))  # VOC's common (w, h)


# -- data ---------------------------------------------------------------------------------


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
        cv2.imwrite(str(root / "JPEGImages" / f"{sample_id}.jpg"),
                    image.clip(0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        label = Image.fromarray(mask, mode="P")
        label.putpalette(flat_palette())
        label.save(root / "SegmentationClass" / f"{sample_id}.png")
        ids.append(sample_id)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
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


# -- trainer overhead and peer ---------------------------------------------------------------


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from seg.cli.common import CONFIG_MODULE

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides))


def random_batches(count: int, batch: int, size: int, classes: int, seed: int = 0) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [{"image": torch.randn(batch, 3, size, size, generator=generator),
             "mask": torch.randint(0, classes, (batch, size, size), generator=generator),
             "id": [str(i) for i in range(batch)]} for _ in range(count)]


def fit_images_per_second(cfg, model, batches: list, device: torch.device,
                          folder: Path) -> float:
    """Images/s of ``Trainer.fit`` over ``batches`` (evaluation and checkpoint excluded,
    as fit itself counts them out); one warm-up fit first."""
    from hydra.utils import instantiate

    from seg.engine import RunInfo
    from seg.reporting import NullLogger

    classes = int(model.decoder.score[-1].out_channels)
    info = RunInfo(class_names=[str(i) for i in range(classes)], palette=[[0, 0, 0]] * classes,
                   mean=[0.0] * 3, std=[1.0] * 3)
    rate = 0.0
    for steps in (min(5, len(batches)), len(batches)):  # warm-up, then the measured fit
        trainer = instantiate(cfg.trainer, max_iters=steps, eval_every=steps, progress=False,
                              device=str(device))
        optimizer = instantiate(cfg.optimizer)(params=model.parameters())
        scheduler = instantiate(cfg.scheduler, total_iters=steps)(optimizer=optimizer)
        metrics = trainer.fit(model, optimizer, scheduler, batches[:steps], batches[:1],
                              folder, NullLogger(), info)
        rate = metrics["train_images_per_s"]
    return rate


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
    from seg.cli.common import model_from_config
    from seg.engine import resolve_device

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


PEER_SIDES = {
    "ours-fcn8s": ("model/encoder=resnet50",),
    "ours-os8": ("model/encoder=resnet50", "model.encoder.output_stride=8"),
    "torchvision": (),
}


def resident_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peer_side(name: str, steps: int) -> dict:
    """One side of ``peer``, run in its own process: images/s and peak memory growth."""
    from seg.engine import resolve_device

    device = resolve_device("auto")
    batch, size = (8, 512) if device.type == "cuda" else (2, 256)
    batches = random_batches(steps, batch, size, 21)
    baseline = resident_mb()
    torch.manual_seed(0)
    if name == "torchvision":
        rate = reference_images_per_second(batches, device)
    else:
        from seg.cli.common import model_from_config

        cfg = compose(*PEER_SIDES[name])
        model = model_from_config(cfg.model, 21)
        with tempfile.TemporaryDirectory() as folder:
            rate = fit_images_per_second(cfg, model, batches, device, Path(folder))
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated() / 2**20
    else:
        memory = resident_mb() - baseline
    return {"images_per_s": rate, "peak_mb": memory, "batch": batch, "size": size,
            "device": str(device)}


def reference_images_per_second(batches: list, device: torch.device) -> float:
    """references/segmentation/train.py's train_one_epoch: fp32, aux loss weighted 0.5."""
    from torchvision.models.segmentation import fcn_resnet50

    model = fcn_resnet50(weights=None, weights_backbone=None, num_classes=21,
                         aux_loss=True).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, len(batches) + 5, power=0.9)

    def step(batch: dict) -> None:
        output = model(batch["image"].to(device))
        target = batch["mask"].to(device)
        loss = torch.nn.functional.cross_entropy(output["out"], target, ignore_index=IGNORE_INDEX)
        loss = loss + 0.5 * torch.nn.functional.cross_entropy(output["aux"], target,
                                                              ignore_index=IGNORE_INDEX)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()

    for batch in batches[:2]:
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(batches) * len(batches[0]["mask"]) / (time.perf_counter() - start)


def bench_peer(steps: int = 5) -> dict:
    results = {}
    for name in PEER_SIDES:
        output = subprocess.run(
            [sys.executable, __file__, "peer-side", name, "--steps", str(steps)],
            check=True, capture_output=True, text=True).stdout
        results[name] = json.loads(output.strip().splitlines()[-1])
    reference = results["torchvision"]["images_per_s"]
    for result in results.values():
        result["ratio"] = result["images_per_s"] / reference
    return results


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


def peer_report(results: dict) -> str:
    first = results["torchvision"]
    lines = [f"Peer: ResNet-50 FCNs, batch {first['batch']} of {first['size']}x{first['size']}, "
             f"21 classes, {first['device']} (images/s, peak memory, speed vs torchvision)"]
    labels = {
        "ours-fcn8s": "seg resnet50 FCN-8s (stride-8 output by skips)",
        "ours-os8": "seg resnet50 dilated to output stride 8",
        "torchvision": "torchvision fcn_resnet50, reference fp32 loop",
    }
    for name, result in results.items():
        lines.append(f"  {labels[name]:<48} {result['images_per_s']:6.2f}  "
                     f"{result['peak_mb']:7.0f} MB  {result['ratio']:5.2f}x")
    lines.append("  target: >= 1.8x")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=("loader", "trainer", "peer", "all", "peer-side"))
    parser.add_argument("side", nargs="?", choices=tuple(PEER_SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=5, help="peer: timed steps per side")
    parser.add_argument("--images", type=int, default=160, help="images timed per pipeline")
    parser.add_argument("--workers", default="auto", help="DataLoader workers (both sides)")
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"),
                        help="where `all` writes its report")
    args = parser.parse_args(argv)
    if args.benchmark == "peer-side":  # one side of `peer`, in its own process
        print(json.dumps(peer_side(args.side, args.steps)))
        return 0
    workers = args.workers if args.workers == "auto" else int(args.workers)
    reports = []
    if args.benchmark in ("loader", "all"):
        reports.append(loader_report(bench_loader(args.images, workers)))
        print(reports[-1], flush=True)
    if args.benchmark in ("trainer", "all"):
        reports.append(trainer_report(bench_trainer()))
        print(reports[-1], flush=True)
    if args.benchmark in ("peer", "all"):
        reports.append(peer_report(bench_peer(args.steps)))
        print(reports[-1], flush=True)
    report = "\n\n".join(reports)
    if args.benchmark == "all":
        args.output.write_text("# Benchmarks\n\nWritten by `make bench` "
                               f"(`python scripts/bench.py all`).\n\n```\n{report}\n```\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
