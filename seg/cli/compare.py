"""``seg-compare``: the upsampling study, learned vs fixed, measured over seeds.

``seg-compare [OVERRIDES...]`` pretrains one encoder (``seg.cli.pretrain``), runs the
sweep of ``configs/compare/default.yaml`` (``compare=quick`` for the small one) as a
Hydra multirun of ``seg-train`` whose runs all start from that encoder, then aggregates
it; ``seg-compare --aggregate DIR`` aggregates an existing sweep folder.

Aggregation reads every run folder (``.hydra/config.yaml``, ``metrics.json`` and the
last checkpoint) and writes into the sweep folder: ``compare.md`` and ``compare.csv``,
per configuration (decoder x upsampler) the mean and standard deviation over seeds,
and the paired difference learned - fixed (runs with the same seed share data order
and every other weight) with a 95 % t confidence interval; ``compare.png``, those
means as bars with error bars; ``examples.png``, a boundary close-up of one val image
under each upsampler. Runs without ``metrics.json`` are listed as failed, never
silently dropped.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.core.override_parser.overrides_parser import OverridesParser
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from seg.cli.common import upsampler_label
from seg.metrics import dilate
from seg.reporting import colorize, denormalize
from seg.stored import dataset_from_stored, load_trained, model_from_checkpoint

FIXED = "bilinear"
ENCODER_DIR = "pretrained_encoder"  # in the sweep folder, beside the numbered runs
UPSAMPLER_ORDER = ("bilinear", "transposed_frozen", "transposed", "resize_conv", "pixel_shuffle")
# metric -> (column title, scale, format); ratios are shown in percent
SUMMARY_METRICS = {
    "mIoU": ("mIoU %", 100, ".2f"),
    "boundary_f": ("boundary F %", 100, ".2f"),
    "pixel_acc": ("pixel acc %", 100, ".2f"),
    "checkerboard": ("checkerboard", 1, ".4f"),
    "upsampler_params": ("upsampler params", 1, ".0f"),
    "train_images_per_s": ("train img/s", 1, ".1f"),
    "inference_ms_per_image": ("inference ms/img", 1, ".2f"),
}
PAIRED_METRICS = ("mIoU", "boundary_f")
# Student's t 0.975 quantiles (two-sided 95 %) for 1..30 degrees of freedom.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(degrees_of_freedom: int) -> float:
    """The 0.975 quantile; beyond 30 degrees of freedom, the (slightly wider) one of 30."""
    return T_975[min(degrees_of_freedom, len(T_975)) - 1]


def load_runs(sweep_dir: Path) -> tuple[list[dict], list[str]]:
    """Every run of the sweep: finished ones with their metrics, and failed ones' folders."""
    runs, failed = [], []
    for config_file in sorted(sweep_dir.glob("*/.hydra/config.yaml")):
        run_dir = config_file.parent.parent
        if run_dir.name == ENCODER_DIR:
            continue
        cfg = OmegaConf.load(config_file)
        metrics_file = run_dir / "metrics.json"
        if not metrics_file.is_file():
            overrides = run_dir / ".hydra" / "overrides.yaml"
            changes = " ".join(OmegaConf.load(overrides)) if overrides.is_file() else ""
            failed.append(f"{run_dir.name} ({changes})" if changes else run_dir.name)
            continue
        runs.append({
            "run_dir": run_dir,
            "config": cfg,
            "decoder": cfg.model.decoder.variant,
            "upsampler": upsampler_label(cfg.model.upsampler),
            "seed": cfg.seed,
            **json.loads(metrics_file.read_text()),
        })
    return runs, failed


def summarize(runs: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds per (decoder, upsampler)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["decoder"], run["upsampler"]), []).append(run)
    rows = []
    for decoder, upsampler in sorted(groups, key=lambda c: configuration_order(*c)):
        members = groups[decoder, upsampler]
        row = {"decoder": decoder, "upsampler": upsampler, "seeds": len(members)}
        for key in SUMMARY_METRICS:
            values = [m[key] for m in members if m.get(key) is not None]
            row[f"{key}_mean"] = statistics.fmean(values) if values else math.nan
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def paired_differences(runs: list[dict], fixed: str = FIXED) -> list[dict]:
    """learned - fixed for each decoder, upsampler and metric, over the seeds both ran."""
    by_key = {(r["decoder"], r["upsampler"], r["seed"]): r for r in runs}
    pairs = []
    configurations = {(r["decoder"], r["upsampler"]) for r in runs}
    for decoder, upsampler in sorted(configurations, key=lambda c: configuration_order(*c)):
        if upsampler == fixed:
            continue
        seeds = sorted(s for d, u, s in by_key if (d, u) == (decoder, upsampler)
                       and (decoder, fixed, s) in by_key)
        for metric in PAIRED_METRICS:
            diffs = [by_key[decoder, upsampler, s][metric] - by_key[decoder, fixed, s][metric]
                     for s in seeds]
            pairs.append({"decoder": decoder, "upsampler": upsampler, "metric": metric,
                          **difference_interval(diffs)})
    return pairs


def difference_interval(diffs: Sequence[float]) -> dict:
    """Mean paired difference, its 95 % t interval and a plain-words verdict."""
    n = len(diffs)
    if n < 2:
        return {"n": n, "mean": diffs[0] if diffs else math.nan, "low": math.nan,
                "high": math.nan, "verdict": "too few paired seeds for an interval"}
    mean = statistics.fmean(diffs)
    half_width = t_quantile(n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    low, high = mean - half_width, mean + half_width
    if low <= 0 <= high:
        verdict = "no significant difference"
    else:
        verdict = "learned is better" if mean > 0 else "learned is worse"
    return {"n": n, "mean": mean, "low": low, "high": high, "verdict": verdict}


def recipe_of(cfg) -> str:
    """One line saying what every run of the sweep trained, for the report's reader."""
    encoder = cfg.model.encoder
    details = f" widths {list(encoder.widths)}" if "widths" in encoder else ""
    if encoder.get("weights"):
        details += f" from {encoder.weights}"
    return (f"encoder {encoder.name}{details}, {cfg.trainer.max_iters} iterations of batch "
            f"{cfg.dataset.batch_size} at {cfg.dataset.crop_size} px, "
            f"{cfg.optimizer._target_.rsplit('.', 1)[-1]} lr {cfg.optimizer.lr}, "
            f"dataset {cfg.dataset.get('name', cfg.dataset.get('root'))}")


def markdown_report(rows: list[dict], pairs: list[dict], failed: list[str],
                    recipe: str = "") -> str:
    titles = [title for title, _, _ in SUMMARY_METRICS.values()]
    lines = ["# Learned vs fixed upsampling", ""]
    if recipe:
        lines += [f"Every run: {recipe}. Mean ± standard deviation over seeds.", ""]
    lines += ["| decoder | upsampler | seeds | " + " | ".join(titles) + " |",
              "|" + "---|" * (3 + len(titles))]
    for row in rows:
        cells = [f"{scale * row[f'{key}_mean']:{form}} ± {scale * row[f'{key}_std']:{form}}"
                 for key, (_, scale, form) in SUMMARY_METRICS.items()]
        lines.append(f"| {row['decoder']} | {row['upsampler']} | {row['seeds']} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Paired difference learned - {FIXED} (same seed), in percentage points, "
              "with its 95 % t interval:", "",
              "| decoder | upsampler | metric | seeds | mean | 95 % CI | verdict |",
              "|---|---|---|---|---|---|---|"]
    for p in pairs:
        lines.append(f"| {p['decoder']} | {p['upsampler']} | {p['metric']} | {p['n']} | "
                     f"{100 * p['mean']:+.2f} | [{100 * p['low']:+.2f}, {100 * p['high']:+.2f}] "
                     f"| {p['verdict']} |")
    lines += ["", "Failed runs: " + (", ".join(failed) if failed else "none")]
    return "\n".join(lines) + "\n"


BOUNDARY_BAND = 3  # pixels: how near a true boundary a disputed pixel counts in examples.png
BAR_METRICS = (("mIoU", "val mIoU"), ("boundary_f", "val boundary F (2 px)"),
               ("train_images_per_s", "train images/s"))


def upsampler_rank(name: str) -> tuple[int, str]:
    """Fixed first, then its frozen twin, then the learned ones; unknown names last."""
    order = {upsampler: i for i, upsampler in enumerate(UPSAMPLER_ORDER)}
    return order.get(name, len(order)), name


def in_study_order(upsamplers: set[str]) -> list[str]:
    return sorted(upsamplers, key=upsampler_rank)


def configuration_order(decoder: str, upsampler: str) -> tuple:
    return decoder, upsampler_rank(upsampler)


def bar_chart(rows: list[dict], path: Path) -> None:
    """Mean over seeds per decoder and upsampler, with the standard deviation as error bars."""
    decoders = sorted({row["decoder"] for row in rows})
    upsamplers = in_study_order({row["upsampler"] for row in rows})
    by_key = {(row["decoder"], row["upsampler"]): row for row in rows}
    width = 0.8 / len(decoders)
    figure = Figure(figsize=(4.2 * len(BAR_METRICS), 3.8), layout="constrained")
    for axes, (key, title) in zip(figure.subplots(1, len(BAR_METRICS)), BAR_METRICS,
                                  strict=True):
        for i, decoder in enumerate(decoders):
            present = [u for u in upsamplers if (decoder, u) in by_key]
            offsets = [upsamplers.index(u) + (i - (len(decoders) - 1) / 2) * width
                       for u in present]
            axes.bar(offsets, [by_key[decoder, u][f"{key}_mean"] for u in present], width,
                     yerr=[by_key[decoder, u][f"{key}_std"] for u in present], capsize=3,
                     label=decoder)
        axes.set_xticks(range(len(upsamplers)), upsamplers, rotation=30, ha="right")
        axes.set_title(title)
        axes.grid(axis="y", alpha=0.3)
    axes.legend(title="decoder")
    figure.savefig(path, dpi=120)


def lowest_seed_checkpoints(runs: list[dict]) -> dict[tuple[str, str], Path]:
    """(decoder, upsampler) -> the last checkpoint of its run with the lowest seed."""
    chosen: dict[tuple[str, str], Path] = {}
    for run in sorted(runs, key=lambda r: r["seed"]):
        checkpoint = run["run_dir"] / "checkpoints" / "last.pt"
        if checkpoint.is_file():
            chosen.setdefault((run["decoder"], run["upsampler"]), checkpoint)
    return chosen


@torch.no_grad()
def most_disputed_window(models: list[torch.nn.Module], dataset, window: int,
                         max_images: int = 32) -> tuple[int, int, int, list[torch.Tensor]]:
    """The val image and ``window``-square region whose true boundaries the models'
    predictions dispute most: ``(index, top, left, predictions)``, predictions ``(H, W)``
    per model. Boundaries are where upsampling shows, so only pixels within
    ``BOUNDARY_BAND`` pixels of a true boundary count."""
    best = (-1.0, 0, 0, 0, [])
    for index in range(min(len(dataset), max_images)):
        item = dataset[index]
        predictions = [model(item["image"][None]).argmax(1)[0] for model in models]
        stacked = torch.stack(predictions)  # (M, H, W)
        labels = item["mask"][None]  # (1, H, W)
        # a pixel is on a true boundary when its 3x3 neighbourhood holds another label
        on_boundary = (dilate_labels(labels) != -dilate_labels(-labels))
        near_boundary = dilate(on_boundary, BOUNDARY_BAND)[0]
        disputed = ((stacked != stacked[0]).any(0) & near_boundary).float()[None, None]
        size = min(window, *disputed.shape[-2:])
        stride = max(size // 4, 1)
        share = F.avg_pool2d(disputed, size, stride=stride)[0, 0]  # (rows, cols)
        value, flat = share.flatten().max(0)
        if value > best[0]:
            top, left = divmod(int(flat), share.shape[1])
            best = (float(value), index, top * stride, left * stride, predictions)
    _, index, top, left, predictions = best
    return index, top, left, predictions


def dilate_labels(labels: torch.Tensor) -> torch.Tensor:
    """The largest label in each pixel's 3x3 neighbourhood, ``(B, H, W)``."""
    pooled = F.max_pool2d(labels[:, None].float(), 3, stride=1, padding=1)
    return pooled[:, 0].long()


def example_figure(runs: list[dict], path: Path, window: int = 48) -> bool:
    """Close-up of one val image under each upsampler (lowest seed; a row per decoder),
    where the upsamplers disagree most. False when no run has a checkpoint."""
    checkpoints = lowest_seed_checkpoints(runs)
    if not checkpoints:
        return False
    states = {key: load_trained(file) for key, file in checkpoints.items()}
    first = next(iter(states.values()))
    dataset = dataset_from_stored(first, "val")
    models = [model_from_checkpoint(state, checkpoints[key]).eval()
              for key, state in states.items()]
    index, top, left, predictions = most_disputed_window(models, dataset, window)
    item = dataset[index]
    size = min(window, *item["mask"].shape)
    crop = (slice(top, top + size), slice(left, left + size))
    image = denormalize(item["image"][None], first["mean"], first["std"])[0]
    palette = first["palette"]

    def show(axes, rgb: torch.Tensor, title: str | None = None) -> None:
        axes.imshow(rgb[:, crop[0], crop[1]].permute(1, 2, 0).numpy(), interpolation="nearest")
        axes.set_xticks([])
        axes.set_yticks([])
        if title:
            axes.set_title(title, fontsize=9)

    decoders = sorted({decoder for decoder, _ in states})
    upsamplers = in_study_order({upsampler for _, upsampler in states})
    predicted = dict(zip(states, predictions, strict=True))
    figure = Figure(figsize=(1.7 * (len(upsamplers) + 2), 1.9 * len(decoders) + 0.5),
                    layout="constrained")
    grid = figure.subplots(len(decoders), len(upsamplers) + 2, squeeze=False)
    for row, decoder in enumerate(decoders):
        show(grid[row, 0], image, "image" if row == 0 else None)
        grid[row, 0].set_ylabel(decoder)
        show(grid[row, 1], colorize(item["mask"][None], palette)[0],
             "ground truth" if row == 0 else None)
        for column, upsampler in enumerate(upsamplers, start=2):
            axes = grid[row, column]
            if (decoder, upsampler) in predicted:
                labels = predicted[decoder, upsampler][None]
                show(axes, colorize(labels, palette)[0], upsampler if row == 0 else None)
            else:
                axes.set_axis_off()
    figure.suptitle(f"val image {item['id']}, rows {top}-{top + size}, columns "
                    f"{left}-{left + size}: where the upsamplers dispute the true boundaries most",
                    fontsize=10)
    figure.savefig(path, dpi=120)
    return True


def aggregate(sweep_dir: str | Path) -> Path:
    """Write compare.md, compare.csv, compare.png and examples.png into ``sweep_dir``;
    return the markdown's path."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder {sweep_dir} does not exist")
    runs, failed = load_runs(sweep_dir)
    if not runs and not failed:
        raise FileNotFoundError(f"no runs (*/.hydra/config.yaml) in {sweep_dir}: pass the "
                                "folder of a `seg-train -m` sweep")
    rows = summarize(runs)
    with open(sweep_dir / "compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["decoder"])
        writer.writeheader()
        writer.writerows(rows)
    report = sweep_dir / "compare.md"
    recipe = recipe_of(runs[0]["config"]) if runs else ""
    report.write_text(markdown_report(rows, paired_differences(runs), failed, recipe))
    if rows:
        bar_chart(rows, sweep_dir / "compare.png")
        example_figure(runs, sweep_dir / "examples.png")
    return report


def run_study(overrides: Sequence[str]) -> tuple[Path, int]:
    """Pretrain the shared encoder, then run the study's sweep (``compare=default``
    unless the overrides choose another); return the sweep folder and exit status.

    An override of ``model.encoder.weights`` skips the pretraining: runs start from
    those weights (``null``: from scratch, each with its seed's encoder).
    """
    overrides = list(overrides)
    if not any(o.startswith("compare=") for o in overrides):
        overrides.insert(0, "compare=default")
    sweep_dir = next((o.split("=", 1)[1] for o in overrides
                      if o.startswith("hydra.sweep.dir=")), None)
    if sweep_dir is None:
        sweep_dir = f"outputs/compare/{datetime.now():%Y-%m-%d/%H-%M-%S}"
        overrides.append(f"hydra.sweep.dir={sweep_dir}")
    if not any(o.startswith("model.encoder.weights=") for o in overrides):
        # the encoder is pretrained once, with the overrides that are not swept (seed 0)
        parsed = OverridesParser.create().parse_overrides(overrides)
        single = [o.input_line for o in parsed if not o.is_sweep_override()
                  and not o.key_or_group.startswith("hydra.")]
        encoder_dir = Path(sweep_dir) / ENCODER_DIR
        command = [sys.executable, "-m", "seg.cli.pretrain", *single,
                   f"hydra.run.dir={encoder_dir}"]
        status = subprocess.run(command, check=False).returncode
        if status:
            return Path(sweep_dir), status
        overrides.append(f"model.encoder.weights={encoder_dir / 'encoder.pth'}")
    command = [sys.executable, "-m", "seg.cli.train", "--multirun", *overrides]
    return Path(sweep_dir), subprocess.run(command, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="examples: seg-compare | seg-compare compare=quick | "
               "seg-compare seed=0,1,2,3,4 | seg-compare --aggregate outputs/compare/DATE/TIME")
    parser.add_argument("--aggregate", type=Path, metavar="DIR",
                        help="only summarise this existing sweep folder")
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides for the sweep (key=value, group=option)")
    args = parser.parse_args(argv)
    if args.aggregate is not None and args.overrides:
        parser.error("--aggregate takes no overrides: it only reads the sweep folder")
    start = time.perf_counter()
    status, sweep_dir = 0, args.aggregate
    if sweep_dir is None:
        sweep_dir, status = run_study(args.overrides)
    try:
        report = aggregate(sweep_dir)
    except FileNotFoundError as error:
        parser.exit(1, f"error: {error}\n")
    print(report.read_text())
    print(f"wrote {', '.join(sorted(p.name for p in sweep_dir.glob('compare.*')))}"
          f"{', examples.png' if (sweep_dir / 'examples.png').is_file() else ''} in {sweep_dir} "
          f"({time.perf_counter() - start:.0f} s)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
