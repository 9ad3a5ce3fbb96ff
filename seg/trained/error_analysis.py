"""seg-eval's error analysis: the val images a model gets most wrong, each drawn as
image | ground truth | prediction, and the confusion matrix as a picture and a CSV.

The worst images are ranked by their per-image mIoU (:func:`per_image_miou`), counted on
the evaluation's own predictions as it goes (:class:`WorstImages`, an
``Evaluator.on_batch``), so the panels show exactly what was evaluated and nothing is run
twice. Outputs follow seg-eval's rule for ``eval.json``: an earlier one is kept unless
``overwrite=true``, and nothing is written through a link.
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from seg.confusion_picture import CELL, draw_confusion
from seg.data.base import SegmentationDataset
from seg.data.decoding import image_size
from seg.data.labels import IGNORE_INDEX
from seg.drawing import draw_legend
from seg.engine.metrics import bin_counts
from seg.errors import PathExists
from seg.files import refuse_unless_replaceable, write_file, write_text

WORST_FOLDER = "worst"
CONFUSION_PICTURE = "confusion.png"
CONFUSION_COUNTS = "confusion.csv"
# a panel's name: its place (01 = the worst), the image id, its mIoU in percent
PANEL_NAME = re.compile(r"\d{2,}_.*_miou-\d+\.\d\.png")
ID_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")  # others become "_" in a panel's name
MAX_ID_CHARACTERS = 120  # a panel's name stays well within a file system's 255 bytes


# -- per-image mIoU --------------------------------------------------------------------------


def per_image_miou(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int,
                   ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Each image's mIoU, ``(B,)`` float64 in [0, 1], of class indices ``(B, H, W)``.

    Pixels whose ground truth is ``ignore_index`` (or out of range) are left out, of the
    prediction too. A class's IoU is intersection / union of its pixels in the ground truth
    and the prediction; the mean is over the classes present in the image's ground truth
    or its prediction (union > 0), so a class absent from both neither helps nor hurts.
    An image with no counted pixel has no mIoU (NaN). Computed on the tensors' device,
    without waiting for it.
    """
    batch, k = targets.shape[0], num_classes
    counted = (targets != ignore_index) & (targets >= 0) & (targets < k)
    image = torch.arange(batch, device=targets.device).view(-1, *[1] * (targets.dim() - 1))
    # one bin per (image, true, predicted) triple and a last one for pixels left out
    index = torch.where(counted, (image * k + targets) * k + predictions.long(), batch * k * k)
    confusion = bin_counts(index.flatten(), batch * k * k + 1)[:-1].view(batch, k, k)
    hits = confusion.diagonal(dim1=1, dim2=2).double()
    union = confusion.sum(2) + confusion.sum(1) - hits
    present = union > 0
    iou = torch.where(present, hits / union.clamp_min(1), 0.0)
    return iou.sum(1) / present.sum(1)  # 0 / 0 = NaN: nothing counted


# -- the worst images ------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One evaluated image: its mIoU (0-1), its id, and its predicted class indices
    ``(H, W)`` uint8, as large as its batch (padding at the bottom and right)."""

    miou: float
    sample_id: str
    prediction: np.ndarray = field(compare=False, repr=False)


class WorstImages:
    """The ``count`` evaluated images of lowest :func:`per_image_miou` (ties: by id), with
    their predictions. Pass it as an evaluation's ``on_batch``; then :meth:`worst`.

    Each batch's numbers are read back when the next batch arrives, by which time the
    device has most likely finished them: the evaluation does not wait for each batch."""

    def __init__(self, count: int, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.count = count
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.kept: list[Candidate] = []
        self.pending: tuple[list[str], torch.Tensor, torch.Tensor] | None = None

    def __call__(self, ids: Sequence[str], predictions: torch.Tensor,
                 targets: torch.Tensor) -> None:
        scores = per_image_miou(predictions, targets, self.num_classes, self.ignore_index)
        self.settle()
        # uint8 holds any class index (at most 256 classes) in an eighth of int64's memory
        self.pending = (list(ids), scores, predictions.to(torch.uint8))

    def settle(self) -> None:
        """Keep the worst of the pending batch."""
        if self.pending is None:
            return
        ids, scores, predictions = self.pending
        self.pending = None
        for index, (sample_id, score) in enumerate(zip(ids, scores.tolist(), strict=True)):
            if score != score:
                continue  # no counted pixel: no mIoU to rank
            if self.would_keep(score, str(sample_id)):
                # a copy: a view would keep the whole batch's predictions alive
                self.kept.append(Candidate(score, str(sample_id),
                                           np.array(predictions[index].cpu())))
                self.kept.sort(key=rank)
                del self.kept[self.count:]

    def would_keep(self, score: float, sample_id: str) -> bool:
        if len(self.kept) < self.count:
            return True
        return (score, sample_id) < rank(self.kept[-1])

    def worst(self) -> list[Candidate]:
        """The worst images of all processes, the worst first (a collective when
        distributed: every process calls it)."""
        self.settle()
        everyone = gathered(self.kept)
        return sorted(everyone, key=rank)[:self.count]


def rank(candidate: Candidate) -> tuple[float, str]:
    """The worst first; of equal mIoU, by id (the same order on any number of processes)."""
    return candidate.miou, candidate.sample_id


def gathered(candidates: list[Candidate]) -> list[Candidate]:
    """Every process's ``candidates`` on every process (each holds its own shard's)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return candidates
    parts: list[list[Candidate] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, candidates)
    return [candidate for part in parts for candidate in part or []]


# -- the panels ------------------------------------------------------------------------------


def ignore_colour(palette: Sequence[Sequence[int]]) -> tuple[int, int, int]:
    """A neutral grey that no class has (the VOC map gives its classes 7, 56 and 63 the
    greys 128, 64 and 192), for ignored pixels; black if every grey is a class's."""
    taken = {tuple(int(c) for c in colour) for colour in palette}
    for level in (160, *range(255, -1, -1)):
        if (level, level, level) not in taken:
            return level, level, level
    return 0, 0, 0


def colour_labels(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Class indices ``(H, W)`` as RGB ``(H, W, 3)`` uint8: each class in its palette colour,
    ignored (and any other) values in :func:`ignore_colour`."""
    table = np.empty((256, 3), np.uint8)
    table[:] = ignore_colour(palette)
    table[:len(palette)] = np.asarray(palette, np.uint8)[:256]
    return table[labels]


def draw_panel(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
               palette: Sequence[Sequence[int]], names: Sequence[str]) -> np.ndarray:
    """image | ground truth | prediction side by side, ``(H', 3W, 3)`` uint8: the top ``H``
    rows are the three, and below them a legend of the classes either shows (and of
    ignored pixels, when there are any), cut to the panel's width."""
    width = image.shape[1]
    panel = np.concatenate([image, colour_labels(truth, palette),
                            colour_labels(prediction, palette)], axis=1)
    shown = [int(c) for c in np.union1d(np.unique(truth), np.unique(prediction))
             if c < len(names)]
    legend_names = [names[c] for c in shown]
    colours = [palette[c] for c in shown]
    if np.any(truth >= len(names)):
        legend_names.append("ignored")
        colours.append(ignore_colour(palette))
    return draw_legend(panel, legend_names, colours)[:, :3 * width]


def panel_name(place: int, count: int, sample_id: str, miou: float) -> str:
    """``01_<id>_miou-23.4.png``: its place among ``count`` (1 = the worst), the id (what a
    file name cannot hold made ``_``) and the mIoU in percent."""
    digits = max(2, len(str(count)))
    safe_id = ID_CHARACTERS.sub("_", sample_id)[:MAX_ID_CHARACTERS] or "_"
    return f"{place:0{digits}d}_{safe_id}_miou-{100 * miou:.1f}.png"


def png_bytes(pixels: np.ndarray) -> bytes:
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format="PNG")
    return encoded.getvalue()


def sample_of(dataset: SegmentationDataset, sample_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The image (uint8 RGB, as decoded: the loader hands the model 0-255 pixels) and the
    class indices of ``sample_id``, as the evaluation read them; None if it is skipped."""
    index = dataset.ids.index(sample_id)
    item = dataset[index]
    if "skipped" in item:
        return None
    image = item["image"].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return image, item["mask"].numpy()


def write_worst(folder: Path, worst: list[Candidate], dataset: SegmentationDataset,
                palette: Sequence[Sequence[int]], names: Sequence[str],
                replace: bool) -> list[Path]:
    """Write a panel of each of ``worst`` into ``folder``, the worst first; with
    ``replace``, an earlier evaluation's panels there go first."""
    make_real_folder(folder)
    if replace:
        remove_earlier_panels(folder)
    written = []
    for place, candidate in enumerate(worst, 1):
        sample = sample_of(dataset, candidate.sample_id)
        if sample is None:
            continue
        image, truth = sample
        prediction = candidate.prediction[:truth.shape[0], :truth.shape[1]]  # no padding
        path = folder / panel_name(place, len(worst), candidate.sample_id, candidate.miou)
        pixels = draw_panel(image, truth, prediction, palette, names)
        written.append(write_file(path, png_bytes(pixels), replace))
    return written


def make_real_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if folder.is_symlink() or not folder.is_dir():  # made by another since the check
        raise PathExists(f"{folder} is a link or a file, not a folder: seg writes only into "
                         "real folders; remove it or choose another output_dir")


def remove_earlier_panels(folder: Path) -> None:
    """Remove the panels an earlier evaluation wrote (plain files named as panels; nothing
    else), so that the folder holds this evaluation's only."""
    for entry in folder.iterdir():
        found = os.lstat(entry)
        if PANEL_NAME.fullmatch(entry.name) and stat.S_ISREG(found.st_mode) \
                and found.st_nlink == 1:
            entry.unlink()


# -- the confusion matrix --------------------------------------------------------------------


def confusion_csv(counts: np.ndarray, names: Sequence[str]) -> str:
    """The raw counts, a row per ground-truth class and a column per predicted one, each
    headed by its class name."""
    text = io.StringIO()
    table = csv.writer(text, lineterminator="\n")
    table.writerow(["truth \\ prediction", *names])
    for name, row in zip(names, np.asarray(counts).tolist(), strict=True):
        table.writerow([name, *row])
    return text.getvalue()


# -- where they go ---------------------------------------------------------------------------


def check_picture_paths(folder: Path, worst: int, overwrite: bool) -> None:
    """As for eval.json: an earlier evaluation's pictures in ``folder`` are kept unless
    ``overwrite``, and even then a link or anything but a plain file (or, for the panels,
    a real folder) is never replaced."""
    for name in (CONFUSION_PICTURE, CONFUSION_COUNTS):
        path = folder / name
        if os.path.lexists(path) and not overwrite:
            raise PathExists(f"{path} holds an earlier evaluation: choose another "
                             "output_dir, or overwrite=true to replace it")
        refuse_unless_replaceable(path, replace=True)
    panels = folder / WORST_FOLDER
    if not worst or not os.path.lexists(panels):
        return
    if panels.is_symlink() or not panels.is_dir():
        raise PathExists(f"{panels} is a link or a file, not a folder: seg writes only into "
                         "real folders; remove it or choose another output_dir")
    if any(panels.iterdir()) and not overwrite:
        raise PathExists(f"{panels} holds an earlier evaluation's panels: choose another "
                         "output_dir, or overwrite=true to replace them")


def picture_bytes(num_classes: int, worst: int, first_image: Path | None) -> int:
    """About the most the pictures take: the confusion picture uncompressed, and each panel
    as three uncompressed copies of an image the size of ``first_image`` (512 px a side if
    its header cannot be read)."""
    side = 400 + CELL * num_classes  # the label band is rarely wider than 400 px
    height, width = (image_size(first_image) if first_image is not None else None) or (512, 512)
    return 3 * side * side + worst * 9 * height * width


def write_pictures(folder: Path, counts: np.ndarray, names: Sequence[str],
                   palette: Sequence[Sequence[int]], worst: list[Candidate] | None,
                   dataset: SegmentationDataset, replace: bool) -> str:
    """Write confusion.png, confusion.csv and (when ``worst`` is not None) the panels of
    ``worst`` into ``folder``; return one line saying where they went."""
    write_file(folder / CONFUSION_PICTURE, png_bytes(draw_confusion(counts, names)), replace)
    write_text(folder / CONFUSION_COUNTS, confusion_csv(counts, names), replace)
    written = f"{CONFUSION_PICTURE}, {CONFUSION_COUNTS}"
    if worst is not None:
        panels = write_worst(folder / WORST_FOLDER, worst, dataset, palette, names, replace)
        written += f", {WORST_FOLDER}/ (the {len(panels)} worst images by mIoU, the worst first)"
    return f"pictures in {folder}: {written}"
