"""Reading every sample of a dataset up front, in parallel: what ``seg-data check`` reports
and what seg-train does to its val split before training."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import DataLoader, Dataset

from seg.data.base import SampleError, SegmentationDataset


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
