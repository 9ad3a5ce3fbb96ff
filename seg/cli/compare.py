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

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from seg.cli.command import CONFIG_MODULE, CommandLine, module_command
from seg.cli.help_text import config_folder, preset_lines
from seg.errors import UserError
from seg.text import printable

if TYPE_CHECKING:  # the study loads torch and matplotlib: not for --help
    from seg.study.sweep import StudyCommands

OUTPUTS = {"compare.md", "compare.csv", "summary.csv", "per_class.csv", "curves.png",
           "compare.png", "examples.png"}


DESCRIPTION = """\
seg-compare: the upsampling study, learned vs fixed upsampling, measured over seeds and
budgets. It pretrains one encoder (seg-pretrain), runs a preset's sweep of seg-train runs
from it, several at a time, then writes the report (compare.md, compare.csv, curves.png,
...) into the sweep folder, outputs/compare/<the overrides>. The same command again
resumes a stopped study."""

EXAMPLES = """\
examples:
  seg-compare                                # compare=default: the study, sized for 2 CPU cores
  seg-compare compare=quick                  # a pipeline check, not a result
  seg-compare seed=0,1,2,3,4                 # five seeds instead of three
  seg-compare compare=gpu hydra/launcher=slurm hydra.launcher.partition=gpu
  seg-compare --aggregate outputs/compare/quick          # the report of a sweep folder again
  seg-compare --gaps outputs/compare/A outputs/compare/B  # how the gaps differ between two"""

# What running each preset took, as docs/STUDY.md records it (the machine named as it is
# there); `seg-compare --help` lists every preset of configs/compare/, with these beside
# them, and "cost not measured" beside the others.
PRESET_COSTS = {
    "default": "cost: 16 min 44 s on a 2-core Intel Xeon (AMX), pretraining and report "
               "included (docs/STUDY.md)",
    "quick": "cost: 2 min 18 s to 3 min 15 s on the idle 2-core Intel Xeon (AMX) "
             "(docs/STUDY.md)",
    "full": "cost: 77 min 36 s on shapes, 75 min 11 s on scenes, on a 2-core Intel Xeon "
            "(AMX) (docs/STUDY.md)",
    "imagenet": "cost: 18 min 52 s on shapes, 19 min 20 s on scenes, on the 2-core Intel "
                "Xeon (AMX) (docs/STUDY.md)",
    "scratch": "cost: 57 min 54 s on shapes (its pretraining 26 min 14 s), 55 min 29 s on "
               "scenes, on the 2-core Intel Xeon (AMX) (docs/STUDY.md)",
    "mydata": "cost: 26 min 40 s for 750 images of 128 px (scripts/make_cells.py's) on "
              "the 2-core Intel Xeon (AMX) (docs/STUDY.md)",
    "practice": "cost: 2 h 53 min on shapes, 2 h 57 min on scenes, on the 2-core Intel "
                "Xeon (AMX) (docs/STUDY.md)",
    "practice_frozen": "cost: 18 min on shapes, 18 min 17 s on scenes, on the 2-core "
                       "Intel Xeon (AMX) (docs/STUDY.md)",
    "gpu": "cost not measured: not run yet (docs/STUDY.md)",
}


def command_line() -> CommandLine:
    """seg-compare's arguments; its --help lists the presets, read from configs/compare/."""
    presets = preset_lines(config_folder(CONFIG_MODULE) / "compare", PRESET_COSTS)
    parser = CommandLine(
        prog="seg-compare", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join([EXAMPLES, "", "presets (compare=NAME: configs/compare/NAME.yaml, "
                                       "the first sentence of its header comment):",
                          *presets]))
    parser.add_argument("--aggregate", type=Path, metavar="DIR",
                        help="only summarise this existing sweep folder")
    parser.add_argument("--gaps", type=Path, nargs=2, metavar=("A", "B"),
                        help="print how each upsampler's gap over bilinear differs between "
                             "two sweeps of the same grid (A - B, paired by seed)")
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides for the sweep (key=value, group=option)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_line()
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
