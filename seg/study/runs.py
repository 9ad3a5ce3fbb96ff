"""A sweep's runs, as the study reads them: each numbered run folder's config,
metrics (with every evaluation during training, its ``history``) and checkpoint, beside
the folder of the encoder they all started from.

A sweep folder may come from anyone, so its files are read as hostile data
(seg.files.read_yaml / read_json: regular files only, a size cap, no YAML aliases) and
the few keys the study uses are checked for their kind. A run folder whose files cannot
be read that way stops the aggregation with one line naming the file and the key (the
report never guesses around a damaged run); a run without metrics.json is listed as
failed. A run config's ``${...}`` interpolations are never resolved: a resolver could
read a file or the environment (``${oc.env:...}``), and every key the study reads is a
plain value in the configs seg-train saves.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from seg.engine.metrics import METRICS
from seg.errors import BadValue
from seg.files import read_json, read_yaml
from seg.run_names import configuration
from seg.settings import is_int, is_number
from seg.study.stats import RUN_NUMBERS
from seg.text import printable, shown

ENCODER_DIR = "pretrained_encoder"  # in the sweep folder, beside the numbered runs
# in the sweep folder: the baseline trained longer, for the convergence rule (its own sweep)
LONGER_DIR = "longer_baseline"
# a part's name as the catalogues register it: what labels rows, columns and figures
PART_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
MAX_LABEL = 200  # characters of a configuration's label (an option and its changes)
PER_CLASS_KEYS = ("per_class_iou", "per_class_boundary_f")
RERUN_CONFIG = "rerun that run, or move its folder out of the sweep folder"
RERUN_METRICS = "rerun that run, or delete the file to list the run as failed"


def required_metrics() -> tuple[str, ...]:
    """The metrics the study cannot do without, present in every metrics.json seg-train
    writes: those it compares between runs of the same seed (seg.engine.metrics.METRICS)."""
    return tuple(scalar.key for scalar in METRICS.placed("paired"))


def optional_metrics() -> tuple[str, ...]:
    """The other numbers the study reads (seg.study.stats, seg.study.report), each a number
    or null: every registered metric's scalars, then the run's own numbers."""
    required = required_metrics()
    return (*(key for key in METRICS.scalar_keys() if key not in required), *RUN_NUMBERS)


def load_runs(sweep_dir: Path) -> tuple[list[dict], list[str]]:
    """Every run of the sweep: finished ones with their metrics, and failed ones' folders
    (with their overrides, escaped). A file that is not what seg-train writes is one
    line (:class:`BadValue`) naming it."""
    runs, failed = [], []
    for config_file in sorted(sweep_dir.glob("*/.hydra/config.yaml")):
        run_dir = config_file.parent.parent
        if run_dir.name == ENCODER_DIR:
            continue
        config = read_yaml(config_file, "run config")
        metrics_file = run_dir / "metrics.json"
        if not os.path.lexists(metrics_file):  # a FIFO or a device there is named, not skipped
            failed.append(failed_run(run_dir))
            continue
        metrics = read_metrics(metrics_file)
        settings = run_settings(config, config_file, metrics)
        max_iters = settings["max_iters"] or metrics.get("iterations", 0)
        runs.append({
            **metrics,  # first: a metrics.json cannot relabel its run
            "run_dir": run_dir,
            "config": config,
            **settings,
            "history": evaluations(metrics, max_iters),
            "max_iters": max_iters,
        })
    return runs, failed


def failed_run(run_dir: Path) -> str:
    """A failed run as the report lists it: its folder, and the overrides that set it apart."""
    overrides = run_dir / ".hydra" / "overrides.yaml"
    changes = ""
    if os.path.lexists(overrides):
        given = read_yaml(overrides, "run overrides", kind=list)
        changes = " ".join(printable(override) for override in given)
    name = printable(run_dir.name)
    return f"{name} ({changes})" if changes else name


def setting_of(config: object, key: str, default: object = None) -> object:
    """The value at the dotted ``key`` of a plain config, or ``default`` where a part of
    the path is missing or not a mapping (never resolving an interpolation)."""
    for part in key.split("."):
        if not isinstance(config, dict) or part not in config:
            return default
        config = config[part]
    return config


def run_settings(config: dict, path: Path, metrics: dict | None = None) -> dict:
    """The keys of a run config the study uses, checked: ``decoder`` and ``upsampler``
    (the configuration's labels, which pair and label runs: seg.run_names), ``seed`` and
    ``max_iters`` (None when the config has none). The labels are those training recorded
    in metrics.json, or for a run of an earlier version, named from its config."""
    decoder = setting_of(config, "model.decoder.name")
    upsampler = setting_of(config, "model.upsampler")
    expect(isinstance(decoder, str) and PART_NAME.fullmatch(decoder), path,
           "model.decoder.name", "a decoder's name (letters, digits, _.+-)", decoder)
    expect(isinstance(upsampler, dict), path, "model.upsampler", "a mapping", upsampler)
    name = upsampler.get("name")
    expect(isinstance(name, str) and PART_NAME.fullmatch(name), path, "model.upsampler.name",
           "a name (letters, digits, _.+-)", name)
    seed = setting_of(config, "seed")
    expect(is_int(seed), path, "seed", "an integer", seed)
    max_iters = setting_of(config, "trainer.max_iters")
    expect(max_iters is None or (is_int(max_iters) and max_iters > 0), path,
           "trainer.max_iters", "a positive integer", max_iters)
    labels = recorded_configuration(metrics or {}, path)
    if labels is None:
        labels = configuration(config)
        check_labels(labels, path, "the configuration named from model", RERUN_CONFIG)
    return {"decoder": labels.get("decoder", decoder),
            "upsampler": labels.get("upsampler", name), "seed": seed, "max_iters": max_iters}


def recorded_configuration(metrics: dict, path: Path) -> dict[str, str] | None:
    """metrics.json's ``configuration`` (part -> label), checked; None where the run
    recorded none (an earlier version's)."""
    labels = metrics.get("configuration")
    if labels is None:
        return None
    where = path.parent.parent / "metrics.json"
    expect(isinstance(labels, dict), where, "configuration", "a mapping of labels", labels,
           RERUN_METRICS)
    check_labels(labels, where, "configuration", RERUN_METRICS)
    return labels


def check_labels(labels: dict, path: Path, key: str, fix: str) -> None:
    """Each label is an option's name, then ``key=value`` changes: printable, and short
    enough to head a column."""
    for part, label in labels.items():
        option = label.split(" ", 1)[0] if isinstance(label, str) else None
        expect(option is not None and PART_NAME.fullmatch(option) and label.isprintable()
               and len(label) <= MAX_LABEL, path, f"{key}.{printable(str(part))}",
               f"an option's name, then key=value changes (at most {MAX_LABEL} printable "
               "characters)", label, fix)


def expect(condition: object, path: Path, key: str, wanted: str, value: object,
           fix: str = RERUN_CONFIG) -> None:
    """One line naming the file, the key, what it takes and what it holds, unless
    ``condition``."""
    if not condition:
        raise BadValue(f"{printable(path)}: {key} must be {wanted}, got {shown(value)}: "
                       f"{fix}")


def read_metrics(path: Path) -> dict:
    """A run's metrics.json, its values the study reads checked; one line naming it when
    it is not what seg-train writes (a run killed while writing it, a file edited by
    hand, a FIFO, a link to a device)."""
    metrics = read_json(path, "run metrics", fix=RERUN_METRICS)
    check_evaluation(metrics, path, "", required_metrics())
    iterations = metrics.get("iterations")
    expect(iterations is None or (is_int(iterations) and iterations >= 0), path,
           "iterations", "a count of iterations", iterations, RERUN_METRICS)
    matrix = metrics.get("confusion_matrix")
    expect(matrix is None or is_matrix(matrix), path, "confusion_matrix",
           "a square list of lists of counts", matrix, RERUN_METRICS)
    history = metrics.get("history")
    expect(history is None or isinstance(history, list), path, "history",
           "a list of evaluations", history, RERUN_METRICS)
    for index, entry in enumerate(history or []):
        where = f"history[{index}]"
        expect(isinstance(entry, dict), path, where, "a mapping", entry, RERUN_METRICS)
        expect(is_int(entry.get("iteration")) and entry["iteration"] >= 0, path,
               f"{where}.iteration", "a count of iterations", entry.get("iteration"),
               RERUN_METRICS)
        check_evaluation(entry, path, f"{where}.")
    return metrics


def check_evaluation(entry: dict, path: Path, where: str, required: tuple = ()) -> None:
    """An evaluation's scalars are numbers (``required`` ones present), its per-class
    values numbers or null by class name (or, from older sweeps, an unnamed list)."""
    for key in required:
        expect(is_number(entry.get(key)), path, where + key, "a number", entry.get(key),
               RERUN_METRICS)
    for key in optional_metrics():
        value = entry.get(key)
        expect(value is None or is_number(value), path, where + key, "a number or null",
               value, RERUN_METRICS)
    for key in PER_CLASS_KEYS:
        values = entry.get(key, {})
        listed = values.values() if isinstance(values, dict) else values
        expect(isinstance(values, dict | list)
               and all(v is None or is_number(v) for v in listed), path, where + key,
               "numbers or null by class name", values, RERUN_METRICS)


def is_matrix(value: object) -> bool:
    """A square list of lists of numbers (a confusion matrix)."""
    return isinstance(value, list) and all(
        isinstance(row, list) and len(row) == len(value) and all(map(is_number, row))
        for row in value)


def load_longer_runs(sweep_dir: Path) -> list[dict]:
    """The finished runs of the longer baseline sweep (:data:`LONGER_DIR`), if it ran."""
    longer = sweep_dir / LONGER_DIR
    return load_runs(longer)[0] if longer.is_dir() else []


def evaluations(metrics: dict, max_iters: int) -> list[dict]:
    """Every evaluation of the run, by iteration. A run of an older sweep kept none but
    its final one, which then stands alone at the run's last iteration."""
    history = metrics.get("history")
    if not history:
        final = {key: value for key, value in metrics.items() if key != "history"}
        history = [{**final, "iteration": metrics.get("iterations", max_iters)}]
    return sorted(history, key=lambda entry: entry["iteration"])


def lowest_seed_checkpoints(runs: list[dict]) -> dict[tuple[str, str], Path]:
    """(decoder, upsampler) -> the last checkpoint of its run with the lowest seed."""
    chosen: dict[tuple[str, str], Path] = {}
    for run in sorted(runs, key=lambda r: r["seed"]):
        checkpoint = run["run_dir"] / "checkpoints" / "last.pt"
        if checkpoint.is_file():
            chosen.setdefault((run["decoder"], run["upsampler"]), checkpoint)
    return chosen
