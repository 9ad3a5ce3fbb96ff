"""``seg-train``: train a model from the Hydra config ``configs/train.yaml``.

The training itself is ``seg.training.train``, imported inside
:func:`train_in_hydra_run`: it loads torch, the dataset readers and TensorBoard, seconds
that ``seg-train --help`` has no use for.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from seg.cli.command import CONFIG_PATH, exit_on_user_error, hydra_command


def train_in_hydra_run(cfg: DictConfig) -> dict:
    """Train as ``cfg`` says into the run folder Hydra made for this run (checkpoints,
    TensorBoard events, metrics.json); return the final metrics. A resume by folder
    (seg.cli.resume_config) tells the training what its command line changed. A process
    group that torchrun started is shut down however the training ends."""
    from seg import training  # looked up when called: a test may replace training.train
    from seg.cli.resume_config import resume_command
    from seg.engine.distributed import shutdown  # torch.distributed: once a run starts

    try:
        runtime = HydraConfig.get().runtime
        choices = dict(runtime.choices)
        return training.train(cfg, runtime.output_dir, choices=choices,
                              resume_command=resume_command(choices))
    finally:
        shutdown()


@hydra_command("train")
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    return train_in_hydra_run(cfg)["mIoU"]  # what a sweeper maximises


if __name__ == "__main__":
    main()
