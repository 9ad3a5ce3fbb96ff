"""Batches for the loops: epochs without end, and word of the samples a dataset skipped."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from torch.utils.data import DataLoader

log = logging.getLogger(__name__)


def endless(loader: DataLoader, epoch: int, start: int = 0) -> Iterator[tuple[int, int, dict]]:
    """``(epoch, batches of the epoch done, batch)`` over epochs without end, from batch
    ``start`` of ``epoch`` (where a resumed run left off). Batches whose samples were all
    skipped are left out; the skipped samples are reported after each epoch."""
    sampler = getattr(loader, "sampler", None)
    while True:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch, start * loader.batch_size)
        skipped: list[str] = []
        for done, batch in enumerate(loader, start + 1):
            skipped += batch.get("skipped", [])
            if len(batch["mask"]):
                yield epoch, done, batch
        warn_skipped(skipped, f"epoch {epoch}")
        epoch, start = epoch + 1, 0


def warn_skipped(skipped: list[str], where: str) -> None:
    """One warning for the samples a dataset skipped (seg-train's ``dataset.on_error=skip``,
    seg-eval's ``on_error=skip``)."""
    if skipped:
        shown = "; ".join(skipped[:5]) + ("; ..." if len(skipped) > 5 else "")
        log.warning("%s skipped %d bad sample(s), as on_error=skip asks: %s", where,
                    len(skipped), shown)
