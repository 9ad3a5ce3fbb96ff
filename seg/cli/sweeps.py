"""What a ``seg-train -m`` sweep adds to its runs: folders named by what changed
(``${seg.run_name:...}`` in configs/hydra/default.yaml) and, when the sweep ends, a
table of its runs and a TensorBoard layout that overlays them per metric."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

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
    """(run folder name, its metrics.json or None when the run failed), in run order; a
    single run kept in the sweep folder (seg-compare's pretrained encoder) is not one."""
    results = []
    for config in sorted(sweep_dir.glob("*/.hydra/config.yaml"),
                         key=lambda p: (len(p.parent.parent.name), p.parent.parent.name)):
        if single_run(config.parent / "hydra.yaml"):
            continue
        metrics = config.parent.parent / "metrics.json"
        results.append((config.parent.parent.name,
                        json.loads(metrics.read_text()) if metrics.is_file() else None))
    return results


def single_run(hydra_file: Path) -> bool:
    """Whether Hydra's record of a run says it ran alone, not as a job of a sweep."""
    if not hydra_file.is_file():
        return False
    return OmegaConf.select(OmegaConf.load(hydra_file), "hydra.mode") == "RUN"


def results_table(results: list[tuple[str, dict | None]]) -> str:
    """The sweep's runs, one line each: final and best val mIoU, or FAILED."""
    width = max([len(name) for name, _ in results] + [3])
    lines = [f"{'run':<{width}}  {'mIoU':>6}  {'best':>6}"]
    for name, metrics in results:
        scores = ("FAILED" if metrics is None else
                  f"{metrics['mIoU']:6.4f}  {metrics.get('best_mIoU', metrics['mIoU']):6.4f}")
        lines.append(f"{name:<{width}}  {scores}")
    return "\n".join(lines)


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
