"""``seg-compare``: the upsampling study, learned vs fixed, measured over seeds and budgets.

``seg-compare [OVERRIDES...]`` pretrains one encoder (``seg.cli.pretrain``), runs the
sweep of ``configs/compare/default.yaml`` (``compare=quick`` for a pipeline check,
``compare=gpu`` on a GPU) as a Hydra multirun of ``seg-train``, several runs at a time,
all starting from that encoder, then the bilinear baseline of each decoder again at
``study.longer_baseline_factor`` times the budget (into ``longer_baseline/``), then
aggregates it; ``seg-compare --aggregate DIR`` aggregates an existing sweep folder, and
``seg-compare --gaps A B`` prints how each upsampler's gap over bilinear differs between
two sweeps of the same grid (compare=imagenet with ImageNet weights and from random
initialisation, for FCN's hypothesis).

The sweep folder is ``outputs/compare/<the overrides>`` (``hydra.sweep.dir=DIR``
chooses another), so the same command run again, after a kill, a crash or a reboot,
resumes it: the encoder is not pretrained again, finished runs are kept as they are,
the others go on from their last checkpoint. ``hydra/launcher=slurm`` submits the runs
as SLURM jobs (submitit); the pretraining runs where seg-compare does.

Every run evaluates at several budgets (``callbacks=study``: seg.study.curve). Aggregation reads
every run folder and writes into the sweep folder: ``compare.md`` (the convergence
check, the verdicts in words, the paired differences learned - bilinear with 95 % t
intervals at every budget, the controls, the per-class differences and the inference
cost), ``compare.csv`` (one row per configuration, seed and budget), ``summary.csv``
(means and standard deviations per configuration), ``per_class.csv``, ``curves.png``
(learning curves), ``compare.png`` (bars) and ``examples.png`` (a boundary close-up
under each upsampler). Runs without ``metrics.json`` are listed as failed, never
silently dropped. A sweep folder is read as data that may be hostile
(seg.study.runs): a run whose config or metrics are not what seg-train writes (a FIFO, a
link to a device, a YAML alias, a key of the wrong kind) stops the report with one line
naming the file; what the report writes never follows a link planted in the folder, and
every string from a run folder it writes or prints is escaped (seg.text.printable).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from seg.cli.command import CommandLine, module_command
from seg.errors import UserError
from seg.text import printable

if TYPE_CHECKING:  # the study loads torch and matplotlib: not for --help
    from seg.study.sweep import StudyCommands

OUTPUTS = {"compare.md", "compare.csv", "summary.csv", "per_class.csv", "curves.png",
           "compare.png", "examples.png"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = CommandLine(
        description=__doc__.splitlines()[0],
        epilog="examples: seg-compare | seg-compare compare=quick | "
               "seg-compare seed=0,1,2,3,4 | seg-compare compare=gpu hydra/launcher=slurm "
               "hydra.launcher.partition=gpu | seg-compare --aggregate outputs/compare/quick")
    parser.add_argument("--aggregate", type=Path, metavar="DIR",
                        help="only summarise this existing sweep folder")
    parser.add_argument("--gaps", type=Path, nargs=2, metavar=("A", "B"),
                        help="print how each upsampler's gap over bilinear differs between "
                             "two sweeps of the same grid (A - B, paired by seed)")
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides for the sweep (key=value, group=option)")
    args = parser.parse_args(argv)
    # the study's code loads torch, matplotlib and the datasets: not for --help
    from seg.files import read_run_text
    from seg.study.report import aggregate
    from seg.study.sweep import run_study

    if (args.aggregate is not None or args.gaps is not None) and args.overrides:
        parser.error("--aggregate and --gaps take no overrides: they only read sweep folders")
    if args.gaps is not None:
        return print_gaps(*args.gaps)
    start = time.perf_counter()
    status, sweep_dir = 0, args.aggregate
    if sweep_dir is None:
        sweep_dir, status = run_study(args.overrides, study_commands())
        if status and not any(sweep_dir.glob("*/.hydra/config.yaml")):
            return status  # stopped before any run (the pretraining said why): no report
    try:
        report = read_run_text(aggregate(sweep_dir), "report")
    except (UserError, OSError) as error:  # a missing folder, an unreadable run's file
        parser.exit(1, f"error: {printable(error)}\n")
    print(printable_lines(report))
    written = sorted(p.name for p in sweep_dir.glob("*.*") if p.name in OUTPUTS)
    print(f"wrote {', '.join(written)} in {printable(sweep_dir)} "
          f"({time.perf_counter() - start:.0f} s)")
    return status


def study_commands() -> StudyCommands:
    """What the study starts: seg-train for its sweeps' runs, seg-pretrain for its shared
    encoder, each a child process of this Python."""
    from seg.study.sweep import StudyCommands

    return StudyCommands(train=module_command("seg.cli.train"),
                         pretrain=module_command("seg.cli.pretrain"))


def printable_lines(text: str) -> str:
    """``text`` with each line escaped (seg.text.printable), its line breaks kept."""
    return "\n".join(map(printable, text.splitlines()))


def print_gaps(sweep_dir: Path, other_dir: Path) -> int:
    from seg.study.report import gap_change_report

    try:
        print(printable_lines(gap_change_report(sweep_dir, other_dir)))
    except (UserError, OSError) as error:
        print(f"error: {printable(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
