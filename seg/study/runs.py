"""A sweep folder's runs, as the study reads them: each numbered run folder's config,
metrics (with every evaluation during training, its ``history``) and checkpoint, beside
the folder of the encoder they all started from."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from seg.errors import BadValue
from seg.models import upsampler_label

ENCODER_DIR = "pretrained_encoder"  # in the sweep folder, beside the numbered runs
# in the sweep folder: the baseline trained longer, for the convergence rule (its own sweep)
LONGER_DIR = "longer_baseline"


def load_runs(sweep_dir: Path) -> tuple[list[dict], list[str]]:
    """Every run of the sweep: finished ones with their metrics, and failed ones' folders."""
    runs, failed = [], []
    for config_file in sorted(sweep_dir.glob("*/.hydra/config.yaml")):
        run_dir = config_file.parent.parent
        if run_dir.name == ENCODER_DIR:
            continue
        cfg = OmegaConf.load(config_file)
        metrics_file = run_dir / "metrics.json"
        if not metrics_file.is_file():
            overrides = run_dir / ".hydra" / "overrides.yaml"
            changes = " ".join(OmegaConf.load(overrides)) if overrides.is_file() else ""
            failed.append(f"{run_dir.name} ({changes})" if changes else run_dir.name)
            continue
        metrics = read_metrics(metrics_file)
        runs.append({
            "run_dir": run_dir,
            "config": cfg,
            "decoder": cfg.model.decoder.name,
            "upsampler": upsampler_label(cfg.model.upsampler),
            "seed": cfg.seed,
            **metrics,
            "history": evaluations(metrics, cfg),
            "max_iters": run_length(metrics, cfg),
        })
    return runs, failed


def read_metrics(path: Path) -> dict:
    """A run's metrics.json; one line naming it when it is not a JSON object (a run
    killed while writing it, a file edited by hand)."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadValue(f"{path}: not valid JSON ({error}): rerun that run, or delete the "
                       "file to list the run as failed") from None
    if not isinstance(metrics, dict):
        raise BadValue(f"{path}: holds a {type(metrics).__name__}, not the metrics seg-train "
                       "writes: rerun that run, or delete the file to list the run as failed")
    return metrics


def load_longer_runs(sweep_dir: Path) -> list[dict]:
    """The finished runs of the longer baseline sweep (:data:`LONGER_DIR`), if it ran."""
    longer = sweep_dir / LONGER_DIR
    return load_runs(longer)[0] if longer.is_dir() else []


def run_length(metrics: dict, cfg: DictConfig) -> int:
    """The iterations the run was set to train (what "a quarter of the run" is of)."""
    length = OmegaConf.select(cfg, "trainer.max_iters")
    return int(length if length is not None else metrics.get("iterations", 0))


def evaluations(metrics: dict, cfg: DictConfig) -> list[dict]:
    """Every evaluation of the run, by iteration. A run of an older sweep kept none but
    its final one, which then stands alone at the run's last iteration."""
    history = metrics.get("history")
    if not history:
        final = {key: value for key, value in metrics.items() if key != "history"}
        history = [{**final, "iteration": metrics.get("iterations", run_length(metrics, cfg))}]
    return sorted(history, key=lambda entry: entry["iteration"])


def lowest_seed_checkpoints(runs: list[dict]) -> dict[tuple[str, str], Path]:
    """(decoder, upsampler) -> the last checkpoint of its run with the lowest seed."""
    chosen: dict[tuple[str, str], Path] = {}
    for run in sorted(runs, key=lambda r: r["seed"]):
        checkpoint = run["run_dir"] / "checkpoints" / "last.pt"
        if checkpoint.is_file():
            chosen.setdefault((run["decoder"], run["upsampler"]), checkpoint)
    return chosen
