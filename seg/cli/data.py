"""``seg-data check dataset=NAME [dataset.root=PATH] [key=value ...]``: read every sample of
every split of a dataset config and list what is wrong, before a training run finds it.

Checks that each image and mask decodes, that they have the same size and that every
label value is one the dataset uses (or, for colour masks, a listed colour), that no
split lists an id twice and that no id is in both the train and the val split. Prints the
sample counts, a per-class pixel histogram, a warning for images with an EXIF orientation
(seg reads them as stored), the first problems of each split (file, what, value) and a
summary of their kinds; exits 1 when there is any problem or the config is wrong, 0
otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
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


def check(overrides: Sequence[str]) -> int:
    """Compose the training config with ``overrides`` and check its dataset's splits."""
    from seg.data.check import format_report, shared_ids
    from seg.data.loader import resolve_num_workers

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    import_user_modules(cfg)  # a reader of the user's own (imports=[...])
    data = cfg.dataset
    workers = resolve_num_workers(data.num_workers)
    class_names = [str(name) for name in data.class_names]
    print(f"checking dataset={printable(data.get('name', '?'))} at {printable(data.root)}")
    reports = [check_split(split, data, workers) for split in SPLITS if split in data]
    shared_ids(reports)
    print(format_report(reports, class_names))
    return 1 if any(r.problems for r in reports) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = CommandLine(
        prog="seg-data", description=__doc__.split("\n\n")[0].split(": ", 1)[-1],
        epilog="example: seg-data check dataset=voc dataset.root=data/VOCdevkit/VOC2012")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    checker = commands.add_parser("check", help="read every sample of a dataset config")
    checker.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                         help="Hydra overrides of the training config (dataset=NAME, ...)")
    args = parser.parse_args(argv)
    try:
        return check(args.overrides)
    except (*USER_ERRORS, HydraException, OmegaConfBaseException) as error:
        # the lines of every seg command: a setting's, a file's, else composing the config's
        line = user_error_line(error, None) or f"error: {config_error_line(error)}"
        print(line.splitlines()[0], file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
