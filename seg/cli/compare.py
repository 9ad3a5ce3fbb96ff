"""``seg-compare --aggregate DIR``: summarise an upsampler comparison sweep.

Reads every run folder of a Hydra sweep (its ``.hydra/config.yaml`` and
``metrics.json``), and writes ``compare.md`` and ``compare.csv`` into the sweep
folder: per configuration (decoder x upsampler) the mean and standard deviation
over seeds, and the paired difference learned - fixed (runs with the same seed
share data order and every other weight) with a 95 % t confidence interval.
Runs without ``metrics.json`` are listed as failed, never silently dropped.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

FIXED = "bilinear"
SUMMARY_METRICS = ("mIoU", "boundary_f", "pixel_acc", "checkerboard", "upsampler_params",
                   "train_images_per_s", "inference_ms_per_image")
PAIRED_METRICS = ("mIoU", "boundary_f")
# Student's t 0.975 quantiles (two-sided 95 %) for 1..30 degrees of freedom.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(degrees_of_freedom: int) -> float:
    """The 0.975 quantile; beyond 30 degrees of freedom, the (slightly wider) one of 30."""
    return T_975[min(degrees_of_freedom, len(T_975)) - 1]


def upsampler_label(upsampler_cfg) -> str:
    """``transposed`` or, when frozen, ``transposed_frozen``; other names as they are."""
    name = upsampler_cfg.name
    return f"{name}_frozen" if upsampler_cfg.get("learnable", True) is False else name


def load_runs(sweep_dir: Path) -> tuple[list[dict], list[str]]:
    """Every run of the sweep: finished ones with their metrics, and failed ones' folders."""
    runs, failed = [], []
    for config_file in sorted(sweep_dir.glob("*/.hydra/config.yaml")):
        run_dir = config_file.parent.parent
        cfg = OmegaConf.load(config_file)
        metrics_file = run_dir / "metrics.json"
        if not metrics_file.is_file():
            overrides = run_dir / ".hydra" / "overrides.yaml"
            changes = " ".join(OmegaConf.load(overrides)) if overrides.is_file() else ""
            failed.append(f"{run_dir.name} ({changes})" if changes else run_dir.name)
            continue
        runs.append({
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
    for (decoder, upsampler), members in sorted(groups.items()):
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
    for decoder, upsampler in sorted({(r["decoder"], r["upsampler"]) for r in runs}):
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


def markdown_report(rows: list[dict], pairs: list[dict], failed: list[str]) -> str:
    header = "| decoder | upsampler | seeds | " + " | ".join(SUMMARY_METRICS) + " |"
    lines = ["# Learned vs fixed upsampling", "", header,
             "|" + "---|" * (3 + len(SUMMARY_METRICS))]
    for row in rows:
        cells = [f"{row[f'{k}_mean']:.4g} ± {row[f'{k}_std']:.2g}" for k in SUMMARY_METRICS]
        lines.append(f"| {row['decoder']} | {row['upsampler']} | {row['seeds']} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Paired difference learned - {FIXED} (same seed), 95 % t interval:", "",
              "| decoder | upsampler | metric | seeds | mean | 95 % CI | verdict |",
              "|---|---|---|---|---|---|---|"]
    for p in pairs:
        lines.append(f"| {p['decoder']} | {p['upsampler']} | {p['metric']} | {p['n']} | "
                     f"{p['mean']:+.4f} | [{p['low']:+.4f}, {p['high']:+.4f}] | {p['verdict']} |")
    lines += ["", "Failed runs: " + (", ".join(failed) if failed else "none")]
    return "\n".join(lines) + "\n"


def aggregate(sweep_dir: str | Path) -> Path:
    """Write compare.md and compare.csv into ``sweep_dir``; return the markdown's path."""
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
    report.write_text(markdown_report(rows, paired_differences(runs), failed))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aggregate", type=Path, required=True, metavar="DIR",
                        help="the sweep folder to summarise")
    args = parser.parse_args(argv)
    try:
        report = aggregate(args.aggregate)
    except FileNotFoundError as error:
        parser.exit(1, f"error: {error}\n")
    print(report.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
