"""Reading every sample of a dataset up front, in parallel: what ``seg-data check`` reports
(per split: the samples, the problems and a per-class pixel histogram) and what seg-train
does to its val split before training."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import DataLoader, Dataset

from seg.data.base import IGNORE_INDEX, SampleError, SegmentationDataset


class SampleCheck(Dataset):
    """Each item: ``(index, label histogram or None, problem or None)``."""

    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            _, mask = self.dataset.load(index)  # fills the dataset's cache, if it keeps one
        except SampleError as error:
            return index, None, str(error)
        return index, np.bincount(mask.ravel(), minlength=256), None


def as_is(item: tuple) -> tuple:
    """Keep the items' numpy histograms (the default would make tensors of them)."""
    return item


def read_samples(dataset: SegmentationDataset, workers: int
                 ) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """Every sample of ``dataset`` decoded and checked, by ``workers`` processes."""
    yield from DataLoader(SampleCheck(dataset), batch_size=None, num_workers=workers,
                          collate_fn=as_is)


def read_every_sample(dataset: SegmentationDataset, workers: int) -> None:
    """Raise :class:`SampleError` for the first bad sample, saying how many there are."""
    problems = [problem for _, _, problem in read_samples(dataset, workers) if problem]
    if problems:
        more = f" (and {len(problems) - 1} more: run seg-data check)" if len(problems) > 1 else ""
        raise SampleError(f"{problems[0]}{more}")


@dataclass
class SplitReport:
    """What reading one split found: its sample count, how many read cleanly, the label
    histogram of those, and one line per problem."""

    name: str
    samples: int = 0
    ok: int = 0
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    problems: list[str] = field(default_factory=list)


def check_dataset(name: str, dataset: SegmentationDataset, workers: int) -> SplitReport:
    """Read every sample of ``dataset`` (the split ``name``) and look for ids listed twice."""
    report = SplitReport(name, samples=len(dataset))
    report.problems += duplicate_ids(dataset)
    for _, histogram, problem in read_samples(dataset, workers):
        if problem is not None:
            report.problems.append(problem)
        else:
            report.ok += 1
            report.histogram += histogram
    return report


def duplicate_ids(dataset: SegmentationDataset) -> list[str]:
    """One problem per id listed more than once: it would weigh double in training or
    count twice in the metrics."""
    return [f"{dataset.source}: id {sample_id!r} is listed {count} times; list it once"
            for sample_id, count in Counter(dataset.ids).items() if count > 1]


def format_report(reports: Sequence[SplitReport], class_names: Sequence[str]) -> str:
    """The counts per split, the pixels per class over all splits (ignore last) and every
    problem, as the lines ``seg-data check`` prints."""
    lines = []
    for report in reports:
        lines.append(f"{report.name}: {report.samples} samples, {report.ok} ok, "
                     f"{len(report.problems)} problem(s)")
    total = sum(r.histogram for r in reports)
    pixels = max(int(total.sum()), 1)
    lines.append("pixels per class (all splits):")
    ignore = f"ignore ({IGNORE_INDEX})"
    width = max(len(name) for name in [*class_names, ignore])
    for index, name in enumerate(class_names):
        lines.append(f"  {index:3d} {name:<{width}} {int(total[index]):>12,d} "
                     f"{100 * total[index] / pixels:6.2f} %")
    lines.append(f"      {ignore:<{width}} {int(total[IGNORE_INDEX]):>12,d} "
                 f"{100 * total[IGNORE_INDEX] / pixels:6.2f} %")
    problems = [(r.name, p) for r in reports for p in r.problems]
    if problems:
        lines.append(f"{len(problems)} problem(s):")
        lines += [f"  [{split}] {problem}" for split, problem in problems]
    else:
        lines.append("no problems")
    return "\n".join(lines)
