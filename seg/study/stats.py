"""The study's statistics: per configuration (decoder x upsampler) the mean and standard
deviation over seeds, and the paired difference learned - fixed with its t interval."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy.stats import t as student_t

FIXED = "bilinear"
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


def t_quantile(degrees_of_freedom: int) -> float:
    """Student's t 0.975 quantile (a two-sided 95 % interval), exact for any degrees of
    freedom: a table capped at 30 would widen the intervals of larger sweeps."""
    return float(student_t.ppf(0.975, degrees_of_freedom))


def upsampler_rank(name: str) -> tuple[int, str]:
    """Fixed first, then its frozen twin, then the learned ones; unknown names last."""
    order = {upsampler: i for i, upsampler in enumerate(UPSAMPLER_ORDER)}
    return order.get(name, len(order)), name


def in_study_order(upsamplers: set[str]) -> list[str]:
    return sorted(upsamplers, key=upsampler_rank)


def configuration_order(decoder: str, upsampler: str) -> tuple:
    return decoder, upsampler_rank(upsampler)


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
