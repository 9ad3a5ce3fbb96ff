"""The benchmarks' targets, as data. After a benchmark runs, each of its targets that holds
on this device type is checked against what it measured and printed as a line, ``PASS``
or ``FAIL`` with the measured value; ``bench.py`` exits non-zero when one fails."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

COMPARISONS = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Target:
    """``metric`` of ``benchmark``'s result compared with ``threshold``. ``metric``: a key of
    the result, or ``side.key`` for a key of one of its sides (peer's results are by side);
    ``device``: the device type (``cuda`` or ``cpu``) it holds on alone, None for both."""

    benchmark: str
    metric: str
    comparison: str
    threshold: float
    why: str
    device: str | None = None


TARGETS = (
    Target("loader", "ratio", ">=", 1.5,
           "seg's VOC recipe feeds 1.5x the images/s of torchvision's reference pipeline"),
    Target("trainer", "ratio", ">=", 0.95,
           "Trainer.fit costs at most 5 % over the bare loop a PyTorch tutorial writes"),
    Target("peer", "ours-os8.ratio", ">=", 1.25,
           "with torchvision's own backbone (dilated to stride 8), 1.25x its bare loop",
           device="cuda"),
    Target("peer", "ours-fcn8s.ratio", ">=", 1.5,
           "FCN-8s trains at 1.5x torchvision's fcn_resnet50 in its fastest bare loop",
           device="cuda"),
    Target("peer", "ours-os8-e2e.in_memory_ratio", ">=", 0.95,
           "from JPEG files the loader keeps 95 % of the in-memory rate: the GPU stays fed",
           device="cuda"),
    Target("peer", "ours-fcn8s.ratio", ">=", 1.8,
           "FCN-8s trains at 1.8x torchvision's fcn_resnet50 in its bare loop",
           device="cpu"),
    *(Target("decoders", f"{decoder}.ratio", ">=", 1.2,
             f"{decoder} trains at 1.2x SMP's with the same encoder, upsampling and parameters")
      for decoder in ("unet", "fpn", "deeplabv3plus", "segformer")),
    Target("precisions", "auto_vs_best", ">=", 0.95,
           "trainer.precision=auto trains lite0 models within 5 % of the fastest precision"),
    Target("peak", "make_train_fraction", ">=", 0.40,
           "make train's step reaches 40 % of the measured convolution peak", device="cpu"),
    Target("sharing", "two_at_once_ratio", ">=", 1.0,
           "two make-train trainings at once train together at least as fast as one alone",
           device="cpu"),
    Target("sharing", "beside_busy_ratio", ">=", 0.4,
           "beside a busy single-threaded process, a training keeps 40 % of its rate alone",
           device="cpu"),
    Target("sharing", "alone_vs_two", ">=", 1.0,
           "one training alone trains as fast as two at once do together (no core idle)",
           device="cpu"),
    *(Target("decoders", f"{decoder}.parameter_ratio", "<=", 1.0,
             f"{decoder} has no more decoder parameters than SMP's")
      for decoder in ("unet", "fpn", "deeplabv3plus", "segformer")),
)


def measured(result: dict, metric: str) -> float | None:
    """The value ``metric`` names in ``result``; None where the result has none."""
    value: object = result
    for key in metric.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return None if value is None else float(value)


@dataclass(frozen=True)
class Verdict:
    """A target and what its benchmark measured (None: not measured, which fails)."""

    target: Target
    value: float | None

    @property
    def passed(self) -> bool:
        target = self.target
        return self.value is not None and COMPARISONS[target.comparison](self.value,
                                                                          target.threshold)

    def line(self) -> str:
        target = self.target
        value = "not measured" if self.value is None else f"{self.value:.3f}"
        return (f"  {'PASS' if self.passed else 'FAIL'}  {target.benchmark} {target.metric} "
                f"{value} (target {target.comparison} {target.threshold:g}): {target.why}")


def check(benchmark: str, result: dict, device_type: str,
          targets: Sequence[Target] = TARGETS) -> list[Verdict]:
    """A verdict for each of ``benchmark``'s targets that holds on ``device_type``."""
    return [Verdict(target, measured(result, target.metric)) for target in targets
            if target.benchmark == benchmark and target.device in (None, device_type)]


def describe(targets: Sequence[Target] = TARGETS) -> str:
    """The targets as lines for ``--help``."""
    return "\n".join(
        f"  {t.benchmark} {t.metric} {t.comparison} {t.threshold:g}"
        + (f" (on {t.device})" if t.device else "") + f": {t.why}" for t in targets)
