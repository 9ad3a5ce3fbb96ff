"""Where training stands: what a checkpoint holds, beside the weights, to go on exactly."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

import numpy as np
import torch


@dataclass
class TrainingState:
    """The loop's position (iteration, epoch and batches of it done), the best val mIoU so
    far, whether an evaluation was cut off and every evaluation's metrics so far (the
    learning curve); ``state_dict`` adds every RNG state, so that a resumed run draws the
    same random numbers as one that never stopped."""

    iteration: int = 0
    epoch: int = 0
    epoch_batches: int = 0
    best_miou: float = -1.0
    pending_evaluation: bool = False
    history: list[dict] = field(default_factory=list)

    def state_dict(self) -> dict:
        return {**asdict(self), "rng": rng_state()}

    def load_state_dict(self, state: dict) -> None:
        """Take the position from a checkpoint (older ones lack the last three fields)."""
        self.iteration, self.epoch = state["iteration"], state["epoch"]
        self.epoch_batches = state.get("epoch_batches", 0)
        self.best_miou = state["best_miou"]
        self.pending_evaluation = state.get("pending_evaluation", False)
        self.history = list(state.get("history", []))
        if "rng" in state:
            set_rng_state(state["rng"])


    def record(self, metrics: dict) -> None:
        """Add an evaluation to the history; one that is redone at the same iteration (a
        resumed pending evaluation) replaces the earlier entry."""
        entry = {"iteration": self.iteration,
                 **{k: v for k, v in metrics.items() if k != "confusion_matrix"}}
        self.history = [h for h in self.history if h["iteration"] != self.iteration] + [entry]


def rng_state() -> dict:
    """Every global random state (python, numpy, torch, CUDA), in types that
    ``torch.load(weights_only=True)`` accepts."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
