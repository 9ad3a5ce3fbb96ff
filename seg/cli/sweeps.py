"""What a ``seg-train -m`` sweep adds to its runs: folders named by what changed
(``${seg.run_name:...}`` in configs/hydra/default.yaml) and, when the sweep ends, a
table of its runs and a TensorBoard layout that overlays them per metric.

The table reads what the sweep's runs left (metrics.json, .hydra/hydra.yaml) as data that
may be hostile (seg.files.read_json / read_yaml: regular files only, a size cap, no YAML
aliases): a run whose files cannot be read so, or whose mIoU is not a number, is listed
as FAILED with one warning naming the file, and the summary goes on. Folder names are
escaped (seg.text.printable) on their way to the log."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from seg.errors import UserError
from seg.files import read_json, read_yaml
from seg.settings import is_number
from seg.text import Lines, printable

log = logging.getLogger(__name__)

# the custom-scalars charts: one per metric, every run of the sweep overlaid
CHARTS = {"val": ["val/mIoU", "val/boundary_f", "val/pixel_acc", "val/checkerboard"],
          "train": ["train/loss", "train/lr"]}
MAX_NAME = 120  # characters: long sweeps still give names a file system takes


def run_name(override_dirname: str) -> str:
    """``${seg.run_name:${hydra.job.override_dirname}}``: a run's folder name from the
    overrides that set it apart, e.g. ``upsampler=bilinear,seed=1`` for
    ``model/upsampler=bilinear seed=1``. A config group is named by its last part, and a
    ``/`` left in a value becomes ``_``, so the name is one folder, not a path."""
    items = [item.split("=", 1) for item in override_dirname.split(",") if "=" in item]
    name = ",".join(f"{key.rsplit('/', 1)[-1]}={value.replace('/', '_')}"
                    for key, value in items)
    return name[:MAX_NAME] or "run"


def register_run_name_resolver() -> None:
    if not OmegaConf.has_resolver("seg.run_name"):
        OmegaConf.register_new_resolver("seg.run_name", run_name)


def sweep_results(sweep_dir: Path) -> list[tuple[str, dict | None]]:
    """(run folder name, escaped; its metrics.json or None when the run failed or its
    metrics cannot be read), in run order; a single run kept in the sweep folder
    (seg-compare's pretrained encoder) is not one."""
    results = []
    for config in sorted(sweep_dir.glob("*/.hydra/config.yaml"),
                         key=lambda p: (len(p.parent.parent.name), p.parent.parent.name)):
        if is_single_run(config.parent / "hydra.yaml"):
            continue
        run_dir = config.parent.parent
        results.append((printable(run_dir.name), run_metrics(run_dir / "metrics.json")))
    return results


def run_metrics(path: Path) -> dict | None:
    """A run's metrics.json when it holds a numeric mIoU (and best_mIoU, if any); None
    when the run wrote none, or, with a warning naming it, one that cannot be read so."""
    metrics = read_or_warn(read_json, path, "run metrics")
    if metrics is None:
        return None
    scores = (metrics.get("mIoU"), metrics.get("best_mIoU", metrics.get("mIoU")))
    if not all(map(is_number, scores)):
        log.warning("%s: mIoU or best_mIoU is not a number: the run is listed as failed",
                    printable(path))
        return None
    return metrics


def read_or_warn(read: Callable[[Path, str], dict], path: Path, what: str) -> dict | None:
    """``read(path, what)``; None when there is no such file, or, with a warning naming
    it, when it cannot be read as one (the run is then listed as failed)."""
    if not os.path.lexists(path):
        return None
    try:
        return read(path, what)
    except UserError as error:
        log.warning("%s", error)
        return None


def is_single_run(hydra_file: Path) -> bool:
    """Whether Hydra's record of a run says it ran alone, not as a job of a sweep (an
    unreadable record says it did not)."""
    record = read_or_warn(read_yaml, hydra_file, "Hydra's record of a run") or {}
    hydra = record.get("hydra")
    return isinstance(hydra, dict) and hydra.get("mode") == "RUN"


def results_table(results: list[tuple[str, dict | None]]) -> str:
    """The sweep's runs, one line each: final and best val mIoU, or FAILED."""
    width = max([len(name) for name, _ in results] + [3])
    lines = [f"{'run':<{width}}  {'mIoU':>6}  {'best':>6}"]
    for name, metrics in results:
        scores = ("FAILED" if metrics is None else
                  f"{metrics['mIoU']:6.4f}  {metrics.get('best_mIoU', metrics['mIoU']):6.4f}")
        lines.append(f"{name:<{width}}  {scores}")
    return Lines("\n".join(lines))


def write_layout(sweep_dir: Path) -> None:
    """A custom-scalars layout at the sweep's root: TensorBoard's Custom Scalars tab then
    draws each metric once, with every run of the sweep on it."""
    from torch.utils.tensorboard import SummaryWriter  # only when a sweep ends

    layout = {group: {tag: ["Multiline", [f"^{tag}$"]] for tag in tags}
              for group, tags in CHARTS.items()}
    with SummaryWriter(str(sweep_dir / "layout")) as writer:
        writer.add_custom_scalars(layout)


class SweepSummary(Callback):
    """Hydra callback: when a sweep ends, print its runs' results and write the layout."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        results = sweep_results(sweep_dir)
        if not results:
            return
        write_layout(sweep_dir)
        log.info("sweep %s:\n%s", sweep_dir, results_table(results))
