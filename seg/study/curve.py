"""The study's learning curve: evaluations at log-spaced training budgets, asked of the
trainer by a callback (configs/callbacks/study.yaml), so that the engine knows no budgets.
Each evaluation lands in the run's metrics.json ``history``, which the report reads."""

from __future__ import annotations

from seg.engine.hooks import Hook
from seg.settings import positive_int


def budgets(max_iters: int, count: int) -> frozenset[int]:
    """``count`` training budgets (iterations) for a learning curve: ``count - 1`` of them
    log-spaced from ``max_iters / 64`` to ``max_iters``, and three quarters of
    ``max_iters``, against which a convergence check compares the end. 0: none."""
    if count == 0:
        return frozenset()
    spaced = max(count - 1, 1)
    points = {max_iters * 64 ** (k / (spaced - 1) - 1) if spaced > 1 else max_iters
              for k in range(spaced)} | ({0.75 * max_iters} if count > 1 else set())
    return frozenset(max(1, round(p)) for p in points)


class LearningCurve(Hook):
    """Evaluations at ``count`` budgets of the run (:func:`budgets`), besides the
    trainer's own every ``trainer.eval_every``."""

    def __init__(self, logger: object = None, model: object = None, count: int = 8) -> None:
        # logger and model: what every callback is built with; a curve needs neither
        self.count = positive_int(count, "callbacks.learning_curve.count")
        self.budgets: frozenset[int] | None = None

    def wants_evaluation(self, iteration: int, max_iters: int) -> bool:
        if self.budgets is None:
            self.budgets = budgets(max_iters, self.count)
        return iteration in self.budgets
