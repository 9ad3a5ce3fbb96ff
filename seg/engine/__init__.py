"""The training engine: the loop (``loop``), its state (``state``), checkpoints,
evaluation and its metrics, TensorBoard writing, processes, stop signals, precision,
schedule and device choice, one module each.

It knows nothing of trained-model use (``seg.trained``), the upsampling study
(``seg.study``) or the command line (``seg.cli``): they build on it, never the other
way round.
"""

from seg.engine.batches import endless
from seg.engine.checkpoints import (
    RunInfo,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from seg.engine.device import resolve_device, seed_everything
from seg.engine.evaluation import Evaluator, evaluate, name_per_class
from seg.engine.hooks import Hook, Step
from seg.engine.loop import LossWindow, Trainer
from seg.engine.parts import RunParts
from seg.engine.precision import resolve_precision
from seg.engine.schedule import PolyLR, poly_factor
from seg.engine.signals import TrainingInterrupted
from seg.engine.state import TrainingState

__all__ = [
    "Evaluator",
    "Hook",
    "LossWindow",
    "PolyLR",
    "RunInfo",
    "RunParts",
    "Step",
    "Trainer",
    "TrainingInterrupted",
    "TrainingState",
    "endless",
    "evaluate",
    "load_checkpoint",
    "load_model_state",
    "name_per_class",
    "poly_factor",
    "resolve_device",
    "resolve_precision",
    "save_checkpoint",
    "seed_everything",
]
