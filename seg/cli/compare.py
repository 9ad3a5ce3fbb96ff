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
import time
from collections.abc import Sequence
from pathlib import Path

from seg.study.report import aggregate
from seg.study.sweep import run_study


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
