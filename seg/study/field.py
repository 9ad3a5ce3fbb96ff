"""The field's published gains over bilinear upsampling, which the study's are read beside:
SAPA's table (Lu, Liu, Ye, Fu, Liu and Cao, "On Point Affiliation in Feature Upsampling",
the journal version of their NeurIPS 2022 SAPA paper), ADE20K val, single-scale mIoU,
every model trained end to end, each upsampler in place of the decoder's bilinear steps.
Its authors report about ±0.5 points between runs, so a published gain within 0.5 of 0
is read as no difference.

Each published upsampler is mapped to seg's closest one; where they differ, the
published name says so (SAPA-D, the dynamic-kernel variant, against seg's ``sapa``,
the paper's SAPA-B)."""

from __future__ import annotations

from dataclasses import dataclass

RUN_TO_RUN = 0.5  # points: the published gains' own noise, as their authors give it


@dataclass(frozen=True)
class PublishedGain:
    """A published model's mIoU gain over bilinear, in points, per seg upsampler."""

    model: str  # e.g. "SegFormer-B1"
    gains: dict[str, float]  # seg's upsampler name -> points over bilinear
    names: dict[str, str]  # seg's upsampler name -> the name the table gives it


SAPA_NAMES = {"transposed": "deconvolution", "pixel_shuffle": "pixel shuffle",
              "carafe": "CARAFE", "fade": "FADE", "sapa": "SAPA-D"}
FIELD = (
    PublishedGain("SegFormer-B1", {"transposed": -1.40, "pixel_shuffle": -0.61, "carafe": 0.71,
                                   "fade": 0.95, "sapa": 2.57}, SAPA_NAMES),
    PublishedGain("UPerNet-R50", {"transposed": 0.34, "pixel_shuffle": 0.26, "carafe": 0.40,
                                  "fade": 0.74, "sapa": 1.51}, SAPA_NAMES),
)
SOURCE = "SAPA's table (ADE20K, end to end, single scale)"


def published_sign(gain: float) -> int:
    """+1 or -1 for a published gain beyond the run-to-run noise, else 0."""
    return 0 if abs(gain) <= RUN_TO_RUN else (1 if gain > 0 else -1)


def ranks(gains: dict[str, float]) -> dict[str, int]:
    """1 for the largest gain, 2 for the next, ... (ties share the better rank)."""
    ordered = sorted(gains.values(), reverse=True)
    return {name: ordered.index(gain) + 1 for name, gain in gains.items()}


def kendall_tau(first: dict[str, float], second: dict[str, float]) -> float | None:
    """Kendall's tau-a between two orderings of the same names: 1 when they agree on
    every pair, -1 when they disagree on every pair; None with fewer than 2 names."""
    names = sorted(first)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    if not pairs:
        return None
    score = sum((first[a] - first[b]) * (second[a] - second[b]) > 0
                for a, b in pairs) - sum((first[a] - first[b]) * (second[a] - second[b]) < 0
                                         for a, b in pairs)
    return score / len(pairs)
