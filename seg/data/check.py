"""Reading every sample of a dataset up front, in parallel: what ``seg-data check`` reports
(per split: the samples, the problems, images that viewers turn by their EXIF orientation,
colour masks that look resized with interpolation, and a per-class pixel histogram) and
what seg-train does to its val split before training."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import DataLoader, Dataset

from seg.data.base import SegmentationDataset
from seg.data.decoding import SampleError, exif_orientation, read_label_image
from seg.data.labels import IGNORE_INDEX
from seg.text import printable

# Per split: a split listing 200,000 missing ids is 20 lines and a count, not 200,000 lines.
MAX_PROBLEMS_SHOWN = 20
MAX_TURNED_SHOWN = 3
# What a problem is about, from the words of its message after the path (the first match).
PROBLEM_KINDS = (
    ("also train ids", "ids in both splits"), ("file not found", "missing files"),
    ("not a regular file", "special files"),
    ("is listed", "ids listed twice"), ("but its image", "size mismatches"),
    ("label values", "bad labels"), ("colour", "bad labels"), ("GTcls", "bad labels"),
    ("over the limit", "files too large"), ("cannot decode", "unreadable files"),
    ("truncated", "unreadable files"), ("is empty", "unreadable files"),
    ("cannot read", "unreadable files"),
)
MAX_SHARED_SHOWN = 5
# A colour mask resized with (bilinear, bicubic) interpolation holds, along each boundary
# of two classes, colours between theirs: it looks so when at least MIN_BLENDS of its
# colours not in classes.yaml, and at least half of the first MAX_COLOURS_TESTED, lie
# between two listed colours, at most BLEND_SLACK (RGB units: rounding) off the line.
MIN_BLENDS = 3
MAX_COLOURS_TESTED = 64
BLEND_SLACK = 2.0
MAX_RESIZED_SHOWN = 3
Item = tuple[int, np.ndarray | None, str | None, int, bool]


class SampleCheck(Dataset):
    """Each item: ``(index, label histogram or None, problem or None, EXIF orientation,
    whether a bad mask looks resized with interpolation)``."""

    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Item:
        try:
            _, mask = self.dataset.load(index)  # fills the dataset's cache, if it keeps one
        except SampleError as error:
            return index, None, str(error), 1, looks_resized(self.dataset, index)
        orientation = exif_orientation(self.dataset.samples[index].image)
        return index, np.bincount(mask.ravel(), minlength=256), None, orientation, False


def looks_resized(dataset: SegmentationDataset, index: int) -> bool:
    """Whether sample ``index`` has a colour mask whose colours not in the dataset's
    colour table (classes.yaml's, ignore_color's) are mostly blends of two that are."""
    table: dict[int, int] | None = getattr(dataset, "color_table", None)
    if not table:  # not a reader of colour masks
        return False
    try:
        rgb = read_label_image(dataset.samples[index].mask, dataset.max_image_pixels)
    except SampleError:
        return False
    if rgb.ndim != 3:
        return False
    packed = np.unique((rgb[..., 0].astype(np.int32) << 16)
                       | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2])
    unknown = [int(colour) for colour in packed if int(colour) not in table]
    if len(unknown) < MIN_BLENDS:
        return False
    blended = blended_colours(unpacked(unknown[:MAX_COLOURS_TESTED]), unpacked(list(table)))
    return int(blended.sum()) >= MIN_BLENDS and float(blended.mean()) >= 0.5


def unpacked(colours: Sequence[int]) -> np.ndarray:
    """Packed ``r << 16 | g << 8 | b`` colours as rows of ``(r, g, b)``, float."""
    packed = np.asarray(colours, dtype=np.int64)[:, None]
    return ((packed >> np.array([16, 8, 0])) & 255).astype(np.float64)  # (n, 3)


def blended_colours(colours: np.ndarray, listed: np.ndarray) -> np.ndarray:
    """Which of ``colours`` (n, 3) lie strictly between two of ``listed`` (k, 3), at most
    BLEND_SLACK off the straight line from one to the other: what interpolation makes
    where two classes meet."""
    first, second = np.triu_indices(len(listed), 1)
    start, step = listed[first], listed[second] - listed[first]  # (pairs, 3)
    length = (step**2).sum(1)

    def between(colour: np.ndarray) -> bool:
        along = ((colour - start) * step).sum(1) / length  # 0 at start, 1 at the other
        off = np.linalg.norm(start + along[:, None] * step - colour, axis=1)
        return bool(((along > 0) & (along < 1) & (off <= BLEND_SLACK)).any())

    return np.array([between(colour) for colour in colours], dtype=bool)


def as_is(item: tuple) -> tuple:
    """Keep the items' numpy histograms (the default would make tensors of them)."""
    return item


def read_samples(dataset: SegmentationDataset, workers: int) -> Iterator[Item]:
    """Every sample of ``dataset`` decoded and checked, by ``workers`` processes."""
    dataset.plan_cache(workers)  # once, here, rather than in each worker
    yield from DataLoader(SampleCheck(dataset), batch_size=None, num_workers=workers,
                          collate_fn=as_is)


def read_every_sample(dataset: SegmentationDataset, workers: int) -> None:
    """Raise :class:`SampleError` for the first bad sample, saying how many there are."""
    problems = [problem for _, _, problem, _, _ in read_samples(dataset, workers) if problem]
    if problems:
        more = f" (and {len(problems) - 1} more: run seg-data check)" if len(problems) > 1 else ""
        raise SampleError(f"{problems[0]}{more}")


@dataclass
class SplitReport:
    """What reading one split found: its sample count, how many read cleanly, the label
    histogram of those, one line per problem, the images of an EXIF orientation other
    than 1 (as stored) with that orientation, and the bad colour masks that look resized
    with interpolation."""

    name: str
    samples: int = 0
    ok: int = 0
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    problems: list[str] = field(default_factory=list)
    turned: list[tuple[str, int]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)


def check_dataset(name: str, dataset: SegmentationDataset, workers: int) -> SplitReport:
    """Read every sample of ``dataset`` (the split ``name``) and look for ids listed twice."""
    report = SplitReport(name, samples=len(dataset), ids=dataset.ids)
    report.problems += duplicate_ids(dataset)
    for index, histogram, problem, orientation, resized in read_samples(dataset, workers):
        if resized:
            report.resized.append(printable(dataset.samples[index].mask))
        if problem is not None:
            report.problems.append(problem)
            continue
        report.ok += 1
        report.histogram += histogram
        if orientation != 1:
            report.turned.append((printable(dataset.samples[index].image), orientation))
    return report


def duplicate_ids(dataset: SegmentationDataset) -> list[str]:
    """One problem per id listed more than once: it would weigh double in training or
    count twice in the metrics."""
    return [f"{dataset.source}: id {printable(repr(sample_id))} is listed {count} times; "
            "list it once" for sample_id, count in Counter(dataset.ids).items() if count > 1]


def shared_ids(reports: Sequence[SplitReport]) -> None:
    """Add a problem to the val split's report when ids of the train split are in it too:
    its scores would then measure images the model trained on. (Splits of a random split
    never share ids; lists can.)"""
    by_name = {report.name: report for report in reports}
    if "train" not in by_name or "val" not in by_name:
        return
    train, val = by_name["train"], by_name["val"]
    shared = sorted(set(train.ids) & set(val.ids))
    if shared:
        shown = ", ".join(printable(repr(sample_id)) for sample_id in shared[:MAX_SHARED_SHOWN])
        more = ", ..." if len(shared) > MAX_SHARED_SHOWN else ""
        val.problems.insert(0, f"ids in both splits: {len(shared)} of the {len(set(val.ids))} "
                               f"val ids are also train ids ({shown}{more}): list each id in "
                               "one split only, or the validation scores images the model "
                               "trained on")


def format_report(reports: Sequence[SplitReport], class_names: Sequence[str]) -> str:
    """The counts per split, the pixels per class over all splits (ignore last), a warning
    per split with EXIF-turned images, then the problems (MAX_PROBLEMS_SHOWN per split), a
    summary of their kinds and, if any colour mask looks resized, one line saying so, as
    the lines ``seg-data check`` prints."""
    class_names = [printable(name) for name in class_names]  # from data: escaped
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
    lines += [turned_warning(report) for report in reports if report.turned]
    resized = [path for report in reports for path in report.resized]
    return "\n".join(lines + problem_lines(reports) + ([resized_hint(resized)] if resized else []))


def resized_hint(paths: Sequence[str]) -> str:
    """One line: these colour masks look resized with interpolation, and the fix."""
    shown = ", ".join(paths[:MAX_RESIZED_SHOWN])
    more = f" and {len(paths) - MAX_RESIZED_SHOWN} more" if len(paths) > MAX_RESIZED_SHOWN else ""
    return (f"hint: {len(paths)} colour mask(s) look resized with interpolation (their unknown "
            f"colours are blends between classes.yaml's colours, where classes meet): "
            f"{shown}{more}; resize masks with nearest neighbour (PIL Image.NEAREST, "
            "cv2.INTER_NEAREST) from the originals")


def turned_warning(report: SplitReport) -> str:
    """One line: the split's images that viewers show turned, which seg reads as stored."""
    shown = ", ".join(f"{path} ({orientation})"
                      for path, orientation in report.turned[:MAX_TURNED_SHOWN])
    more = f" and {len(report.turned) - MAX_TURNED_SHOWN} more" \
        if len(report.turned) > MAX_TURNED_SHOWN else ""
    return (f"warning: [{report.name}] {len(report.turned)} image(s) have an EXIF orientation "
            f"other than 1, which seg does not apply (images and masks are read as stored): "
            f"{shown}{more}; check that their masks fit the stored pixels")


def problem_lines(reports: Sequence[SplitReport]) -> list[str]:
    """The first MAX_PROBLEMS_SHOWN problems of each split and a summary line, or
    ``no problems``."""
    count = sum(len(report.problems) for report in reports)
    if not count:
        return ["no problems"]
    lines = [f"{count} problem(s):"]
    for report in reports:
        lines += [f"  [{report.name}] {problem}"
                  for problem in report.problems[:MAX_PROBLEMS_SHOWN]]
        if len(report.problems) > MAX_PROBLEMS_SHOWN:
            lines.append(f"  ... and {len(report.problems) - MAX_PROBLEMS_SHOWN:,} more in "
                         f"{report.name}")
    kinds = "; ".join(f"{report.name}: {describe_kinds(report.problems)}"
                      for report in reports if report.problems)
    return [*lines, f"summary: {kinds}"]


def describe_kinds(problems: Sequence[str]) -> str:
    """``"12 problem(s) (10 missing files, 2 bad labels)"``."""
    kinds = Counter(problem_kind(problem) for problem in problems)
    return f"{len(problems):,} problem(s) (" + ", ".join(
        f"{number:,} {kind}" for kind, number in kinds.most_common()) + ")"


def problem_kind(problem: str) -> str:
    """What ``problem`` is about (see PROBLEM_KINDS)."""
    message = problem.partition(": ")[2] or problem  # the path may hold any word
    return next((kind for words, kind in PROBLEM_KINDS if words in message), "other problems")
