"""``seg-data COMMAND dataset=NAME [dataset.root=PATH] [key=value ...]``: check every
sample of a dataset config, or look at its training augmentation.

``seg-data check`` reads every sample of every split of a dataset config and lists what is
wrong, before a training run finds it. It checks that each image and mask decodes, that
they have the same size and that every label value is one the dataset uses (or, for
colour masks, a listed colour), that no split lists an id twice and that no id is in both
the train and the val split. Prints the sample counts, a per-class pixel histogram, a
warning for images with an EXIF orientation (seg reads them as stored), the first
problems of each split (file, what, value) and a summary of their kinds; exits 1 when
there is any problem or the config is wrong, 0 otherwise.

``seg-data show [--count N] [--seed S] [--out DIR] dataset=NAME [key=value ...]`` reads
the first N samples (default 8) that a run seeded S (default: the config's ``seed``) would
train on, through the same reader and augmentation, and writes each as a PNG: the crop,
and beside it the crop with its mask in the dataset's colours (seg.data.preview). The
folder is new (``data_preview/<dataset>-<n>``) or the empty ``--out``: nothing is
overwritten.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from seg.cli.command import CONFIG_MODULE, CommandLine, import_user_modules
from seg.cli.errors import (
    USER_ERRORS,
    config_error_line,
    one_line,
    root_cause,
    user_error_line,
)
from seg.text import printable

if TYPE_CHECKING:
    from seg.data.check import SplitReport

# seg.data.check and seg.data.loader (torch, OpenCV) are imported by the functions that use
# them: seg-data --help then does not wait seconds for them.

SPLITS = ("train", "val")


def check_split(name: str, data: DictConfig, workers: int) -> SplitReport:
    """Read every sample of one split; a split that cannot even be listed is one problem."""
    from seg.data.check import SplitReport, check_dataset
    from seg.data.readers import build_split

    report = SplitReport(name)
    try:
        dataset = build_split(data, name, None, cache=False, on_error="raise")
    except Exception as error:  # noqa: BLE001 - any listing failure is the split's problem
        cause = root_cause(error)
        if not isinstance(cause, USER_ERRORS):
            raise
        message = one_line(str(cause.args[0]) if cause.args else repr(cause))
        report.problems.append(printable(message))  # it may quote a file's name
        return report
    return check_dataset(name, dataset, workers)


def composed(overrides: Sequence[str]) -> DictConfig:
    """The training config with ``overrides``, the user's modules imported (a reader of
    their own, ``imports=[...]``)."""
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    import_user_modules(cfg)
    return cfg


def check(overrides: Sequence[str]) -> int:
    """Compose the training config with ``overrides`` and check its dataset's splits."""
    from seg.data.check import format_report, shared_ids
    from seg.data.loader import resolve_num_workers

    data = composed(overrides).dataset
    workers = resolve_num_workers(data.num_workers)
    class_names = [str(name) for name in data.class_names]
    print(f"checking dataset={printable(data.get('name', '?'))} at {printable(data.root)}")
    reports = [check_split(split, data, workers) for split in SPLITS if split in data]
    shared_ids(reports)
    print(format_report(reports, class_names))
    return 1 if any(r.problems for r in reports) else 0


def show(overrides: Sequence[str], count: int, seed: int | None, out: Path | None) -> int:
    """Compose the training config with ``overrides`` and write ``count`` of its augmented
    training samples (seg.data.preview), seeded as a run of ``seed`` (default the
    config's)."""
    from seg.data.palette import resolve_palette
    from seg.data.preview import show_samples
    from seg.data.readers import build_split
    from seg.data.transforms import augmentation
    from seg.settings import check_dataset_root
    from seg.training import resolve_crop_size

    cfg = composed(overrides)
    data = cfg.dataset
    check_dataset_root(data.root, data.get("setup_command"))
    resolve_crop_size(data)
    # training's split and augmentation (seg.data.readers.training_split), uncached: only
    # a few samples are read
    dataset = build_split(data, "train", augmentation(data), cache=False)
    name = str(data.get("name", "dataset"))
    folder, written = show_samples(dataset, resolve_palette(data.palette, data.num_classes),
                                   name, count, cfg.seed if seed is None else seed, out)
    print(f"wrote {len(written)} augmented training samples of dataset={printable(name)} "
          f"to {printable(folder)} (each: the crop | its mask over it)")
    return 0


def command_line() -> CommandLine:
    parser = CommandLine(
        prog="seg-data", description=__doc__.split("\n\n")[0].split(": ", 1)[-1],
        epilog="examples: seg-data check dataset=voc dataset.root=data/VOCdevkit/VOC2012; "
               "seg-data show --count 16 dataset=shapes dataset.rotation=30")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    checker = commands.add_parser("check", help="read every sample of a dataset config")
    shower = commands.add_parser(
        "show", help="write augmented training samples as PNG files (image | mask over it)")
    shower.add_argument("--count", type=int, default=8, help="samples to write (default 8)")
    shower.add_argument("--seed", type=int, default=None,
                        help="the run's seed whose first samples to show (default: seed=)")
    shower.add_argument("--out", type=Path, default=None,
                        help="a new or empty folder (default: a fresh data_preview/NAME-N)")
    for command in (checker, shower):
        command.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                             help="Hydra overrides of the training config (dataset=NAME, ...)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = command_line().parse_args(argv)
    try:
        if args.command == "show":
            return show(args.overrides, args.count, args.seed, args.out)
        return check(args.overrides)
    except (*USER_ERRORS, HydraException, OmegaConfBaseException) as error:
        # the lines of every seg command: a setting's, a file's, else composing the config's
        line = user_error_line(error, None) or f"error: {config_error_line(error)}"
        print(line.splitlines()[0], file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
