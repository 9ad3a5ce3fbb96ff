"""Where seg-eval, seg-predict and seg-export write, checked before the work that fills
it: a read-only disk, a file in the way or a full disk is one line naming the setting
before minutes of evaluation, not a traceback after them. Nothing is created here: the
folder is made when its first file is written (a test folder is made and removed)."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from seg.errors import BadValue, NotAFolder
from seg.files import cannot_write_in, check_name_fits, first_existing, free_space
from seg.text import printable

# eval.json: the metrics (a few kB) and the confusion matrix, one number a line with its
# indent (json.dumps(indent=2)): at most ~24 bytes a cell.
EVAL_JSON_BASE_BYTES = 64 << 10
EVAL_JSON_BYTES_PER_CELL = 24


def check_output_folder(folder: str | Path, key: str, needed: int, what: str,
                        value: str | Path | None = None) -> None:
    """``folder`` (the setting ``key``'s ``value``, or the folder of the file it names) is a
    folder or can be made, can be written, and its disk has room for ``needed`` bytes of
    ``what``; else one line naming the setting and the fix."""
    folder = Path(folder)
    setting = f"{key}={printable(value if value is not None else folder)}"
    existing = first_existing(folder)
    if not existing.is_dir():
        raise NotAFolder(f"{setting}: {printable(existing)} is a file, not a folder: choose "
                         f"another {key}")
    for made in made_folders(folder, existing):
        check_name_fits(made)
    reason = cannot_write_in(existing)
    if reason is not None:
        raise BadValue(f"{setting}: cannot write in {printable(existing)} ({reason}): "
                       "choose a folder you can write to")
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return  # unknown: the write itself will say
    if free < needed:
        raise BadValue(f"{setting}: {what} needs about {megabytes(needed)} and its disk has "
                       f"{free_space(existing)}: free some space or choose another {key}")


def made_folders(folder: Path, existing: Path) -> list[Path]:
    """The folders from below ``existing`` down to ``folder``, which a write would make."""
    made = []
    while folder != existing:
        made.append(folder)
        folder = folder.parent
    return made


def megabytes(count: int) -> str:
    return f"{math.ceil(count / 100_000) / 10:.1f} MB"


def eval_json_bytes(num_classes: int) -> int:
    """About the most eval.json takes for ``num_classes`` classes."""
    return EVAL_JSON_BASE_BYTES + EVAL_JSON_BYTES_PER_CELL * num_classes ** 2


def largest_file_bytes(paths: list[Path]) -> int:
    """The size of the largest of ``paths`` (0 for one that cannot be read: its reader
    names it): about what one image's mask and overlay take, which a disk must hold at
    least; what the others take is known only once encoded."""
    sizes = [0]
    for path in paths:
        try:
            sizes.append(os.stat(path).st_size)
        except OSError:
            continue
    return max(sizes)
