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
import re
import statistics
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
CHARTS = {"eval": ["eval/mIoU", "eval_metrics/boundary_f", "eval_metrics/pixel_acc",
                    "eval_metrics/checkerboard"],
          "train": ["train/loss", "train/lr"]}
MAX_NAME = 120  # characters: long sweeps still give names a file system takes


def run_name(override_dirname: str) -> str:
    """``${seg.run_name:${hydra.job.override_dirname}}``: a run's folder name from the
    overrides that set it apart, e.g. ``upsampler-bilinear+seed-1`` for
    ``model/upsampler=bilinear seed=1``: only the keys the sweep varies (where the sweep
    said which, :data:`SWEPT_KEYS_VARIABLE`), a config group named by its last part, a
    float to 4 significant digits, and only letters, digits and ``._-`` in a value. So the
    name is one folder, and a path to it needs no quoting on a command line (``=`` and
    ``,`` would make Hydra read it as an override and a sweep)."""
    swept = swept_keys_of_this_sweep()
    items = [item.split("=", 1) for item in OVERRIDE_SEPARATOR.split(override_dirname)
             if "=" in item]
    name = "+".join(f"{folder_safe(key.rsplit('/', 1)[-1])}-{folder_safe(rounded(value))}"
                    for key, value in items if swept is None or key.lstrip("+~") in swept)
    return name[:MAX_NAME] or "run"


# between two overrides of override_dirname: a comma before the next ``key=`` (a value
# such as [0.5,2.0] holds commas too)
OVERRIDE_SEPARATOR = re.compile(r",(?=[+~]?[\w./@-]+=)")
UNSAFE_IN_FOLDER = re.compile(r"[^\w.-]")
SWEPT_KEYS_VARIABLE = "SEG_SWEPT_KEYS"  # set for a sweep's runs by SweepSummary


def rounded(value: str) -> str:
    """A float's text to 4 significant digits (0.006260326907499732: 0.00626); any other
    value as it is."""
    if not FLOAT_TEXT.fullmatch(value):
        return value
    return f"{float(value):.4g}"


FLOAT_TEXT = re.compile(r"-?\d*\.\d+(e-?\d+)?|-?\d+e-?\d+")


def folder_safe(text: str) -> str:
    return UNSAFE_IN_FOLDER.sub("_", text)


def swept_keys_of_this_sweep() -> set[str] | None:
    """The keys the running sweep varies, as its first process found them; None outside
    a sweep that said (every override then names the run)."""
    value = os.environ.get(SWEPT_KEYS_VARIABLE)
    return None if value is None else set(filter(None, value.split(",")))


def swept_keys(config: DictConfig) -> list[str]:
    """The keys that a sweep's command line (``key=a,b``, ``range(...)``, ``choice(...)``,
    ``interval(...)``) and its ``hydra.sweeper.params`` give several values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = list(OmegaConf.select(config, "hydra.overrides.task", default=None) or [])
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    overrides = task + [f"{key}={value}" for key, value in params.items()]
    parsed = OverridesParser.create().parse_overrides(overrides)
    return sorted({o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()})


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


SEED_ITEM = re.compile(r"(^|\+)seed-[^+]*")
JOB_NUMBER = re.compile(r"^\d+_")


def configuration_of(run: str) -> str:
    """A run's folder name without its job number and its seed: what runs that differ
    only by seed share."""
    return SEED_ITEM.sub("", JOB_NUMBER.sub("", run)).strip("+") or "(all)"


def seed_table(results: list[tuple[str, dict | None]]) -> str:
    """Runs that differ only by seed, one line per configuration: how many finished, the
    final val mIoU's mean and standard deviation over them; empty when no configuration
    has two runs."""
    groups: dict[str, list[float]] = {}
    for name, metrics in results:
        scores = groups.setdefault(configuration_of(name), [])
        if metrics is not None:
            scores.append(metrics["mIoU"])
    if all(len(scores) < 2 for scores in groups.values()):
        return ""
    width = max([len(name) for name in groups] + [13])
    lines = [f"{'configuration':<{width}}  {'runs':>4}  mIoU mean ± std"]
    for name, scores in groups.items():
        spread = f" ± {statistics.stdev(scores):.4f}" if len(scores) > 1 else ""
        mean = f"{statistics.fmean(scores):.4f}{spread}" if scores else "FAILED"
        lines.append(f"{name:<{width}}  {len(scores):>4}  {mean}")
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
    """Hydra callback: when a sweep starts, tell its runs which keys it varies (their
    folder names, :func:`run_name`); when it ends, print its runs' results and write the
    layout."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # the launcher's processes (joblib's, SLURM's jobs) start after this, and inherit it
        os.environ[SWEPT_KEYS_VARIABLE] = ",".join(swept_keys(config))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        os.environ.pop(SWEPT_KEYS_VARIABLE, None)  # a later sweep in this process says its own
        sweep_dir = Path(config.hydra.sweep.dir)
        results = sweep_results(sweep_dir)
        if not results:
            return
        write_layout(sweep_dir)
        log.info("sweep %s:\n%s", sweep_dir, results_table(results))
        grouped = seed_table(results)
        if grouped:
            log.info("over seeds:\n%s", grouped)
