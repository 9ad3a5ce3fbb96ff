"""``seg-eval checkpoint=PATH``: a checkpoint's metrics table on its dataset's val split.

The checkpoint carries the resolved training config, so no dataset or model
config is needed; ``dataset_root=PATH`` points it at the data elsewhere.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from seg.checks import check_dataset_root
from seg.cli.common import CONFIG_PATH, exit_on_user_error, overrides_checked
from seg.data.base import IGNORE_INDEX
from seg.data.loader import build_loader
from seg.distributed import broadcast_from_main, init_distributed, process_device, shutdown
from seg.engine import evaluate, name_per_class, resolve_device
from seg.metrics import format_table
from seg.stored import dataset_from_stored, load_trained, model_from_checkpoint, stored_reader

log = logging.getLogger("seg.eval")


def evaluate_checkpoint(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Evaluate ``cfg.checkpoint``; print the table and write ``eval.json`` into ``run_dir``."""
    state = load_trained(cfg.checkpoint)
    root = cfg.dataset_root if cfg.dataset_root is not None else stored_reader(state)[1]["root"]
    check_dataset_root(root, key="dataset_root")
    device = resolve_device(cfg.device)
    group = init_distributed(device)  # under torchrun each process evaluates a shard
    device = process_device(device, group)
    loader = build_loader(dataset_from_stored(state, cfg.split, root), cfg.batch_size,
                          train=False, num_workers=cfg.num_workers, rank=group.rank,
                          world_size=group.world_size)

    model = model_from_checkpoint(state, cfg.checkpoint)
    metrics, _ = evaluate(model.to(device), loader, len(state["class_names"]), device,
                          IGNORE_INDEX, infer=instantiate(cfg.inference))
    run_dir = broadcast_from_main(str(run_dir))  # one folder, whatever time each rank read
    if group.is_main:
        log.info("%s (iteration %d) on %s %s, inference %s, scales %s, flip %s:\n%s",
                 cfg.checkpoint, state["iteration"], root, cfg.split, cfg.inference.mode,
                 list(cfg.inference.scales), cfg.inference.flip,
                 format_table(metrics, state["class_names"]))
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        Path(run_dir, "eval.json").write_text(
            json.dumps(name_per_class(metrics, state["class_names"]), indent=2))
        log.info("wrote %s", Path(run_dir, "eval.json"))
    return metrics


@overrides_checked("eval")
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    try:
        evaluate_checkpoint(cfg, HydraConfig.get().runtime.output_dir)
    finally:
        shutdown()


if __name__ == "__main__":
    main()
