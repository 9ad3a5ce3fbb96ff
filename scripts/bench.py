"""`make bench`'s command line: `python scripts/bench.py BENCHMARK [options]`, BENCHMARK one of
loader, cache, trainer, encoders, peer, upsample, audit, decoders, precisions, peak, sharing
or all; `--help` lists the benchmarks and their targets, `BENCHMARK --help` says what one
measures. The benchmarks are the package beside this file, scripts/benchmarks/; the exit
status is 1 when a target fails."""

import sys
from pathlib import Path

SCRIPTS = str(Path(__file__).resolve().parent)
if SCRIPTS not in sys.path:  # `python -P` leaves this script's folder off the import path
    sys.path.insert(0, SCRIPTS)

from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
