"""The study's report: ``compare.md`` and ``compare.csv`` (means over seeds and paired
differences) and the figures, written into the sweep folder."""

from __future__ import annotations

import csv
from pathlib import Path

from seg.errors import MissingPath
from seg.study.figures import bar_chart, example_figure
from seg.study.runs import load_runs
from seg.study.stats import FIXED, SUMMARY_METRICS, paired_differences, summarize


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
    """The markdown of compare.md: the per-configuration table, then the paired one."""
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


def write_csv(rows: list[dict], path: Path) -> None:
    """One row per configuration, every mean and standard deviation in full precision."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["decoder"])
        writer.writeheader()
        writer.writerows(rows)


def aggregate(sweep_dir: str | Path) -> Path:
    """Write compare.md, compare.csv, compare.png and examples.png into ``sweep_dir``;
    return the markdown's path."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise MissingPath(f"sweep folder {sweep_dir} does not exist")
    runs, failed = load_runs(sweep_dir)
    if not runs and not failed:
        raise MissingPath(f"no runs (*/.hydra/config.yaml) in {sweep_dir}: pass the "
                          "folder of a `seg-train -m` sweep")
    rows = summarize(runs)
    write_csv(rows, sweep_dir / "compare.csv")
    report = sweep_dir / "compare.md"
    recipe = recipe_of(runs[0]["config"]) if runs else ""
    report.write_text(markdown_report(rows, paired_differences(runs), failed, recipe))
    if rows:
        bar_chart(rows, sweep_dir / "compare.png")
        example_figure(runs, sweep_dir / "examples.png")
    return report
