"""The study's figures: ``compare.png``, the means over seeds as bars; ``curves.png``,
the learning curves; ``examples.png``, a boundary close-up of one val image under each
upsampler."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import matplotlib
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from seg.engine.metrics import dilate
from seg.engine.tensorboard import colorize, displayable
from seg.files import write_file
from seg.study.runs import lowest_seed_checkpoints
from seg.study.stats import FIXED, in_study_order
from seg.trained.checkpoint import dataset_from_stored, load_trained, model_from_checkpoint

BOUNDARY_BAND = 3  # pixels: how near a true boundary a disputed pixel counts in examples.png
BAR_METRICS = (("mIoU", "val mIoU"), ("boundary_f", "val boundary F"),
               ("train_images_per_s", "train images/s"))


def plain_text(draw: Callable) -> Callable:
    """Draw a figure with its text taken as written: labels come from run folders, and
    matplotlib would parse ``$...$`` in them as mathematics (an error, for a bad one)."""
    @functools.wraps(draw)
    def drawn(*args, **kwargs):
        with matplotlib.rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)

    return drawn


def save_figure(figure: Figure, path: Path) -> None:
    """Save as every output of seg is saved (seg.files.write_file: never through a link
    planted at ``path``, never half a file)."""
    write_file(path, lambda file: figure.savefig(file, format="png", dpi=120))


@plain_text
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
    save_figure(figure, path)


@plain_text
def curve_figure(curves: dict[tuple[str, str], list[dict]], path: Path) -> None:
    """``curves.png``: val mIoU against iterations (log scale), a panel per decoder, per
    upsampler the mean over seeds with its 95 % t interval as a band; the fixed baseline
    black and dashed, the line every other is read against."""
    decoders = sorted({decoder for decoder, _ in curves})
    upsamplers = in_study_order({upsampler for _, upsampler in curves})
    colours = iter(f"C{i}" for i in range(100))
    styles = {u: ("black", "--") if u == FIXED else (next(colours), "-") for u in upsamplers}
    figure = Figure(figsize=(5.2 * len(decoders), 4.2), layout="constrained")
    panels = figure.subplots(1, len(decoders), squeeze=False, sharey=True)[0]
    for axes, decoder in zip(panels, decoders, strict=True):
        for upsampler in upsamplers:
            draw_curve(axes, curves.get((decoder, upsampler), []), upsampler, *styles[upsampler])
        iterations = sorted({p["iteration"] for (d, _), points in curves.items()
                             for p in points if d == decoder})
        axes.set_xscale("log")
        # the evaluated budgets as plain numbers: log axes' 2 x 10^0 reads badly
        # (slanted: on a log axis 3/4 of the run sits close beside the end)
        axes.set_xticks(iterations, [str(i) for i in iterations], rotation=45, ha="right")
        axes.xaxis.set_minor_locator(NullLocator())
        axes.set_xlabel("training iterations")
        axes.set_title(decoder)
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("val mIoU % (mean over seeds, 95 % t band)")
    panels[-1].legend(title="upsampler", fontsize=8)
    save_figure(figure, path)


def draw_curve(axes, points: list[dict], upsampler: str, colour: str, line: str) -> None:
    """One upsampler's mean curve and its interval band (left out where a single seed
    leaves the bounds NaN); the baseline drawn on top."""
    if not points:
        return
    iterations = [p["iteration"] for p in points]
    axes.plot(iterations, [100 * p["mean"] for p in points], line, color=colour, marker=".",
              label=upsampler, zorder=3 if upsampler == FIXED else 2)
    axes.fill_between(iterations, [100 * p["low"] for p in points],
                      [100 * p["high"] for p in points], color=colour, alpha=0.1)


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


@plain_text
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
    image = displayable(item["image"][None])[0]
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
    save_figure(figure, path)
    return True
