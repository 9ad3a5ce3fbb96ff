"""TensorBoard helpers: scalars, colour-coded image grids, the config and hparams."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from seg.drawing import draw_legend, draw_titles

GRID_TITLES = ("image", "ground truth", "prediction")  # log_segmentation's columns


def colorize(labels: torch.Tensor, palette: Sequence[Sequence[int]]) -> torch.Tensor:
    """Label maps ``(B, H, W)`` to RGB images ``(B, 3, H, W)`` in [0, 1]; 255 -> palette[255]."""
    table = torch.zeros(256, 3)
    table[: len(palette)] = torch.tensor(palette, dtype=torch.float32)[:256] / 255
    return table[labels.long().clamp(0, 255).cpu()].permute(0, 3, 1, 2)


def displayable(images: torch.Tensor) -> torch.Tensor:
    """Images as decoded (0-255, what the model takes) in [0, 1], for display."""
    return (images.float() / 255).clamp(0, 1)



def tile(images: torch.Tensor, columns: int, padding: int = 2, pad_value: float = 0.0
         ) -> torch.Tensor:
    """``(N, C, H, W)`` images side by side, ``columns`` per row, as one ``(3, H', W')``
    image (single-channel images are shown grey), like torchvision's make_grid."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    count, channels, height, width = images.shape
    columns = min(columns, count)
    rows = -(-count // columns)
    cell_h, cell_w = height + padding, width + padding
    grid = images.new_full((channels, rows * cell_h + padding, columns * cell_w + padding),
                           pad_value)
    for index, image in enumerate(images):
        top = (index // columns) * cell_h + padding
        left = (index % columns) * cell_w + padding
        grid[:, top:top + height, left:left + width] = image
    return grid


def annotate_grid(grid: torch.Tensor, cell_width: int, padding: int, titles: Sequence[str],
                  names: Sequence[str], palette: Sequence[Sequence[int]]) -> torch.Tensor:
    """A ``tile`` grid ``(3, H, W)`` in [0, 1] as uint8 ``(3, H', W')``, with ``titles``
    above its columns and a legend of ``names`` in their ``palette`` colours below it."""
    pixels = (grid.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    centres = [padding + column * (cell_width + padding) + cell_width // 2
               for column in range(len(titles))]
    pixels = draw_titles(pixels, titles, centres, cell_width)
    pixels = draw_legend(pixels, names, palette[:len(names)])
    return torch.from_numpy(pixels).permute(2, 0, 1)


class TensorBoardLogger:
    """Writes a run's TensorBoard events under ``log_dir``.

    ``purge_step``: a resumed run passes its first new step, so that TensorBoard drops
    the events an interrupted run wrote after its last checkpoint instead of showing
    them twice."""

    def __init__(self, log_dir: str | Path, max_images: int = 4,
                 purge_step: int | None = None) -> None:
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        self.max_images = max_images

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def log_segmentation(
        self,
        tag: str,
        images: torch.Tensor,
        targets: torch.Tensor,
        predictions: torch.Tensor,
        palette: Sequence[Sequence[int]],
        step: int,
        class_names: Sequence[str] | None = None,
    ) -> None:
        """One grid row per sample: input, ground truth, prediction; the columns titled,
        and a legend of ``class_names`` (else the class indices) below."""
        n = min(self.max_images, images.shape[0])
        rows = torch.stack(
            [images[:n].cpu().float(), colorize(targets[:n], palette),
             colorize(predictions[:n], palette)],
            dim=1,
        )  # (n, 3 panels, 3, H, W)
        grid = rows.flatten(0, 1)  # (3n, 3, H, W): image, truth, prediction, image, ...
        names = class_names or [str(index) for index in range(len(palette))]
        self.writer.add_image(tag, annotate_grid(tile(grid, columns=3, padding=2),
                                                 images.shape[-1], 2, GRID_TITLES, names,
                                                 palette), step)

    def log_kernels(self, tag: str, weight: torch.Tensor, step: int, max_kernels: int = 64) -> None:
        """A weight tensor ``(out, in, k, k)`` as a grid of kernels, each scaled to [0, 1]."""
        kernels = weight.detach().float().cpu().flatten(0, 1)[:max_kernels]  # (n, k, k)
        low = kernels.amin((1, 2), keepdim=True)
        high = kernels.amax((1, 2), keepdim=True)
        scaled = (kernels - low) / (high - low).clamp_min(1e-12)
        grid = tile(scaled.unsqueeze(1), columns=8, padding=1, pad_value=0.5)
        self.writer.add_image(tag, grid, step)

    def log_picture(self, tag: str, picture: np.ndarray, step: int) -> None:
        """An RGB uint8 picture ``(H, W, 3)``."""
        self.writer.add_image(tag, picture, step, dataformats="HWC")

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        # Markdown code fence keeps the YAML indentation readable in TensorBoard.
        self.writer.add_text(tag, "```\n" + text + "\n```", step)

    def log_hparams(self, hparams: dict[str, object], metrics: dict[str, float]) -> None:
        """Hyper-parameters and final metrics, in this run's own folder for the HParams tab.

        Only the session's start and end are written, not an experiment summary: TensorBoard
        takes the first experiment summary it finds as the whole sweep's, with every key
        marked as not differing, so a sweep's swept keys would start hidden. Without one
        it computes the experiment from all runs, and shows the keys that differ.

        ``metrics`` name scalars the run already logs (``eval/mIoU``): the HParams tab
        shows each one's last value, and the Time Series tab no one-point cards of its own."""
        clean = {k: v if isinstance(v, int | float | str | bool) else str(v)
                 for k, v in hparams.items()}
        _, session_start, session_end = hparams_summary(clean, metrics)
        for summary in (session_start, session_end):
            self.writer.file_writer.add_summary(summary)

    def close(self) -> None:
        self.writer.close()


class NullLogger:
    """What processes other than rank 0 log to: nothing, so that events are not doubled."""

    def __getattr__(self, name: str):
        if name.startswith("log_") or name == "close":
            return lambda *args, **kwargs: None
        raise AttributeError(name)
