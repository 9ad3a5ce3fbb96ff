"""``seg-train``: train a model from the Hydra config ``configs/train.yaml``.

The training itself is ``seg.training``, imported inside ``train``: it loads torch, the
dataset readers and TensorBoard, seconds that ``seg-train --help`` has no use for.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from seg.cli.common import CONFIG_PATH, exit_on_user_error, hydra_command


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train as ``cfg`` says, writing checkpoints, TensorBoard events and metrics.json
    into ``run_dir``; return the final metrics (as in metrics.json)."""
    from seg import training

    return training.train(cfg, run_dir)


@hydra_command("train")
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    from seg.engine.distributed import shutdown  # torch.distributed: imported once a run starts

    try:
        metrics = train(cfg, HydraConfig.get().runtime.output_dir)
    finally:
        shutdown()
    return metrics["mIoU"]  # what a sweeper maximises


if __name__ == "__main__":
    main()
