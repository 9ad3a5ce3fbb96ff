"""Running the study's sweep: one encoder pretrained (``seg.cli.pretrain``), then a Hydra
multirun of ``seg.cli.train`` whose runs all start from it, each in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from seg.study.runs import ENCODER_DIR


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
        # one process alone: every core (the sweep's runs share them, trainer.threads)
        command = [sys.executable, "-m", "seg.cli.pretrain", *single,
                   "trainer.threads=null", f"hydra.run.dir={encoder_dir}"]
        status = subprocess.run(command, check=False).returncode
        if status:
            return Path(sweep_dir), status
        overrides.append(f"model.encoder.weights={encoder_dir / 'encoder.pth'}")
    command = [sys.executable, "-m", "seg.cli.train", "--multirun", *overrides]
    return Path(sweep_dir), subprocess.run(command, check=False).returncode
