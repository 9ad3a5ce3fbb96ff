"""Turn downloaded dataset archives into the layouts the readers in ``seg.data`` expect.

Nothing is downloaded: fetch the archives first (data/README.md says where), then run

    prepare_data.py voc --archive PATH/VOCtrainval_11-May-2012.tar --out data/
        extract PASCAL VOC 2012 to data/VOCdevkit/VOC2012
    prepare_data.py sbd --archive PATH/benchmark.tgz --voc-root data/VOCdevkit/VOC2012 --out data/
        extract SBD to data/benchmark_RELEASE (or pass --sbd-root instead of --archive when
        it is extracted) and merge it into VOC: SegmentationClassAug/*.png for the SBD
        labels, the missing JPEGs, and ImageSets/Segmentation/train_aug.txt
    prepare_data.py cityscapes --archives gtFine_trainvaltest.zip leftImg8bit_trainvaltest.zip
                               --out data/cityscapes
        extract Cityscapes (or pass --root when it is extracted) and write the
        *_gtFine_labelTrainIds.png of every *_gtFine_labelIds.png
    prepare_data.py ade20k --archive PATH/ADEChallengeData2016.zip --out data/
        extract ADE20K (MIT Scene Parsing) to data/ADEChallengeData2016

Each command skips what is already there (--force redoes it) and ends with the overrides
to pass to seg-train. A problem (missing archive, unexpected content) is one line on stderr
and exit status 1. Archives are checked whole before anything is written: a link, a device,
a path leading outside --out or a size no published archive has (a decompression bomb) means
the archive is refused. A failed extraction (a full disk) removes the file it was writing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from multiprocessing import Pool
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, TypeVar

import numpy as np
from PIL import Image

from seg.data.decoding import SampleError, describe_values, read_label_image
from seg.data.palette import flat_palette
from seg.data.readers.cityscapes import label_id_lut
from seg.data.readers.voc import TRAIN_AUG_LIST, read_sbd_mat, train_aug_ids
from seg.files import WriteFailed, free_space, write_file, write_text

T = TypeVar("T")
PROGRESS_EVERY = 500  # files between two progress lines
MAX_PROBLEMS_SHOWN = 20

VOC_LAYOUT = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")
SBD_LAYOUT = ("dataset/cls", "dataset/img", "dataset/train.txt", "dataset/val.txt")
ADE20K_LAYOUT = tuple(f"{kind}/{split}" for kind in ("images", "annotations")
                      for split in ("training", "validation"))
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"


class PrepareError(Exception):
    """A problem the user can fix: :func:`main` prints it as one line and returns 1."""


@dataclass(frozen=True)
class Download:
    """Where an archive is published, to tell the user how to get it."""

    files: str
    url: str

    def hint(self, option: str) -> str:
        return f"download {self.files} from {self.url} and pass it to {option} (see data/README.md)"


VOC = Download("VOCtrainval_11-May-2012.tar", "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/")
SBD = Download("benchmark.tgz", "http://home.bharathh.info/pubs/codes/SBD/download.html")
CITYSCAPES = Download("gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip",
                      "https://www.cityscapes-dataset.com/downloads/ (after registration)")
ADE20K = Download("ADEChallengeData2016.zip", "http://sceneparsing.csail.mit.edu/")


# --- progress, checks and safe writes ---------------------------------------------------

def with_progress(items: Iterable[T], total: int, what: str) -> Iterator[T]:
    """Yield ``items``, printing ``done/total what`` every PROGRESS_EVERY items and at the end."""
    for done, item in enumerate(items, 1):
        yield item
        if done % PROGRESS_EVERY == 0 or done == total:
            print(f"  {done}/{total} {what}", flush=True)


def require_folder(path: Path, what: str, fix: str) -> Path:
    if not path.is_dir():
        raise PrepareError(f"{what} not found: {path}; {fix}")
    return path


def require_layout(root: Path, relative_paths: Sequence[str], fix: str) -> None:
    """Every ``root/<relative path>`` exists, else an error naming the first missing one."""
    missing = [root / relative for relative in relative_paths if not (root / relative).exists()]
    if missing:
        others = f" (and {len(missing) - 1} more expected paths)" if len(missing) > 1 else ""
        raise PrepareError(f"{missing[0]} not found{others}; {fix}")


def save_png(image: Image.Image, path: Path) -> None:
    """Written whole or not at all (seg.files.write_file: a temporary file of a unique
    name, then a rename), so that an interrupted run leaves no half-written file that
    the next run would skip as done, and never through a link."""
    write_file(path, partial(image.save, format="PNG"))


def copy_file(source: Path, path: Path) -> None:
    """``source`` copied to ``path``, written as :func:`save_png` writes."""
    with open(source, "rb") as data:
        write_file(path, partial(shutil.copyfileobj, data))


def report_problems(problems: Sequence[str], what: str) -> int:
    """Print the problems (the first MAX_PROBLEMS_SHOWN) to stderr; the exit status, 1."""
    print(f"error: {len(problems)} {what}:", file=sys.stderr)
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        print(f"  {problem}", file=sys.stderr)
    if len(problems) > MAX_PROBLEMS_SHOWN:
        print(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more", file=sys.stderr)
    return 1


def print_next_steps(overrides: str) -> None:
    print(f"ready. Check the tree with `.venv/bin/seg-data check {overrides}`,\n"
          f"then train with `.venv/bin/seg-train {overrides}`")


# --- archives ---------------------------------------------------------------------------
# Our own extraction, not tarfile's extractall: its "data" filter is missing before Python
# 3.10.12/3.11.4, and symlink chains whose resolved path overflows PATH_MAX bypass it on
# Pythons without the mid-2025 fixes (CVE-2025-4517). The published archives hold only
# files and folders: refusing links, devices and other special members leaves a member
# only the path its name says, which is resolved and checked.

TAR_SPECIAL_MEMBERS = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link",
                       tarfile.CHRTYPE: "a device", tarfile.BLKTYPE: "a device",
                       tarfile.FIFOTYPE: "a FIFO"}
ZIP_SPECIAL_MEMBERS = {stat.S_IFLNK: "a symbolic link", stat.S_IFCHR: "a device",
                       stat.S_IFBLK: "a device", stat.S_IFIFO: "a FIFO",
                       stat.S_IFSOCK: "a socket"}
NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)  # Windows has none

# Sizes no published archive comes near, refused from the members' declared sizes before
# anything is written (and counted again while writing, against a header that lies): the
# largest, Cityscapes' leftImg8bit, is 11 GB extracted, ADE20K's zip 1 GB, and no file in
# them reaches 100 MB. Photos and PNG masks barely compress, so a member (or a whole
# compressed tar) expanding more than MAX_COMPRESSION_RATIO times is a decompression bomb;
# below RATIO_FROM_BYTES (text lists compress well) the ratio is not checked.
MAX_EXTRACTED_BYTES = 64 << 30
MAX_MEMBER_BYTES = 4 << 30
MAX_COMPRESSION_RATIO = 200
RATIO_FROM_BYTES = 4 << 20
COPY_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Member:
    """An archive member: its name, why it cannot be extracted (None: it can), for a file
    how to read its bytes (None for a folder), its declared size and, in a zip, its
    compressed size."""

    name: str
    problem: str | None
    read: Callable[[], IO[bytes]] | None
    size: int = 0
    packed: int | None = None


@dataclass
class SizeBudget:
    """The declared sizes of an archive's members, counted against the limits as the
    archive is listed: a compressed tar's listing decompresses it, so a bomb is stopped
    after reading about MAX_COMPRESSION_RATIO times its size."""

    archive: Path
    archive_bytes: int
    total: int = 0

    def add(self, member: Member) -> None:
        self.total += member.size
        if member.size > MAX_MEMBER_BYTES:
            self.refuse(member, f"{member.size:,} bytes, over the limit of "
                                f"{MAX_MEMBER_BYTES:,} for one file")
        if member.packed is not None and expands_too_much(member.size, member.packed):
            self.refuse(member, f"a decompression bomb: {member.packed:,} bytes expand to "
                                f"{member.size:,}")
        if self.total > MAX_EXTRACTED_BYTES:
            self.refuse(member, f"the archive expands to over {MAX_EXTRACTED_BYTES:,} bytes")
        if expands_too_much(self.total, self.archive_bytes):
            self.refuse(member, f"a decompression bomb: the archive's {self.archive_bytes:,} "
                                f"bytes expand to over {self.total:,}")

    def refuse(self, member: Member, reason: str) -> None:
        raise PrepareError(f"{self.archive}: refusing to extract member {member.name!r} "
                           f"({reason}); the archive is damaged or not the published file")


def expands_too_much(size: int, packed: int) -> bool:
    return size > RATIO_FROM_BYTES and size > MAX_COMPRESSION_RATIO * max(packed, 1)


def tar_member_problem(member: tarfile.TarInfo) -> str | None:
    if member.isreg() or member.isdir():
        return None
    return TAR_SPECIAL_MEMBERS.get(member.type, f"a special member of type {member.type!r}")


def zip_member_problem(member: zipfile.ZipInfo) -> str | None:
    file_type = stat.S_IFMT(member.external_attr >> 16)  # the Unix mode, 0 when not written
    if file_type in (0, stat.S_IFREG, stat.S_IFDIR):
        return None
    return ZIP_SPECIAL_MEMBERS.get(file_type, f"a special member of type {oct(file_type)}")


def unsafe_member_reason(name: str) -> str | None:
    """Why the archive member ``name`` could land outside the output folder, or None."""
    posix_name = name.replace("\\", "/")
    if posix_name.startswith("/") or PureWindowsPath(name).drive:
        return "absolute path"
    if ".." in PurePosixPath(posix_name).parts:
        return "'..' in its path"
    return None


def destination(archive: Path, out: Path, member: Member) -> Path:
    """Where ``member`` goes inside ``out`` (a resolved path), or a PrepareError saying why
    it cannot be extracted there."""
    reason = member.problem or unsafe_member_reason(member.name)
    fix = "the archive is damaged or not the published file"
    path = (out / member.name).resolve()  # follows any symlink already inside `out`
    if not reason and not path.is_relative_to(out):  # the name is fine: a symlink in `out` is not
        reason = f"a symlink in {out} would redirect it to {path}"
        fix = f"remove that symlink from {out}"
    if reason:
        raise PrepareError(f"{archive}: refusing to extract member {member.name!r} ({reason}); "
                           f"{fix}")
    return path


def extract_members(archive: Path, out: Path, members: Sequence[Member]) -> None:
    """Write ``members`` into ``out``, after checking every one of them: one bad member
    anywhere means nothing is written."""
    out = out.resolve()
    checked = [(member, destination(archive, out, member)) for member in members]
    for member, path in with_progress(checked, len(checked), "files extracted"):
        if member.read is None:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        write_member(archive, member, path)


def write_member(archive: Path, member: Member, path: Path) -> None:
    """Write ``member`` to ``path`` (through seg.files: never through a link, never half a
    file), no more bytes than it declares. A failure (a full disk, a header that lies) is
    one line naming the member and the free space."""

    def copy(target: IO[bytes]) -> None:
        with member.read() as source:
            if not copy_at_most(source, target, member.size):
                raise PrepareError(f"{archive}: member {member.name!r} holds more than the "
                                   f"{member.size:,} bytes its header declares; the archive "
                                   "is damaged or not the published file")

    try:
        write_file(path, copy)
    except WriteFailed as error:
        raise PrepareError(f"{archive}: cannot extract member {member.name!r} to {path} "
                           f"({error.reason}; {free_space(path.parent)}); free some space or "
                           "choose another --out, and run again") from None


def copy_at_most(source: IO[bytes], target: IO[bytes], limit: int) -> bool:
    """Copy ``source`` into ``target``; False, as soon as it is known, when ``source`` holds
    more than ``limit`` bytes."""
    written = 0
    while chunk := source.read(COPY_CHUNK_BYTES):
        written += len(chunk)
        if written > limit:
            return False
        target.write(chunk)
    return True


def extract_tar(archive: Path, out: Path) -> None:
    budget = SizeBudget(archive, archive.stat().st_size)
    with tarfile.open(archive) as tar:
        members = []
        for info in tar:  # not getmembers(): a bomb is stopped while it is listed
            member = Member(info.name, tar_member_problem(info),
                            None if info.isdir() else partial(tar.extractfile, info),
                            info.size if info.isreg() else 0)
            budget.add(member)
            members.append(member)
        extract_members(archive, out, members)


def extract_zip(archive: Path, out: Path) -> None:
    budget = SizeBudget(archive, archive.stat().st_size)
    with zipfile.ZipFile(archive) as zip_file:
        members = [Member(info.filename, zip_member_problem(info),
                          None if info.is_dir() else partial(zip_file.open, info),
                          info.file_size, info.compress_size)
                   for info in zip_file.infolist()]
        for member in members:
            budget.add(member)
        extract_members(archive, out, members)


def require_archive(archive: Path, download: Download, option: str) -> None:
    if not archive.is_file():
        raise PrepareError(f"archive not found: {archive}; {download.hint(option)}")


def extract(archive: Path, out: Path, done_when: Sequence[Path], force: bool) -> None:
    """Extract a tar (any compression) or zip archive into ``out``, unless every path of
    ``done_when`` (not empty) exists already."""
    if not force and done_when and all(path.exists() for path in done_when):
        print(f"{archive.name}: already extracted in {out} (--force extracts it again)")
        return
    out.mkdir(parents=True, exist_ok=True)
    print(f"extracting {archive} into {out}")
    try:
        if zipfile.is_zipfile(archive):
            extract_zip(archive, out)
        elif tarfile.is_tarfile(archive):
            extract_tar(archive, out)
        else:
            raise PrepareError(f"{archive} is neither a tar nor a zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as error:
        raise PrepareError(f"{archive}: cannot extract ({error}); download it again") from None
    except OSError as error:  # e.g. a disk full, or a file where the archive has a folder
        raise PrepareError(f"{archive}: cannot extract into {out} ({error})") from None


def zip_folders(archive: Path, depth: int) -> list[str]:
    """The folders ``depth`` levels down in a zip archive, e.g. ``gtFine/train``."""
    try:
        with zipfile.ZipFile(archive) as zip_file:
            names = zip_file.namelist()
    except zipfile.BadZipFile as error:
        raise PrepareError(f"{archive}: not a zip archive ({error})") from None
    parts = (PurePosixPath(name).parts for name in names)
    return sorted({"/".join(part[:depth]) for part in parts if len(part) > depth})


# --- voc --------------------------------------------------------------------------------

def prepare_voc(args: argparse.Namespace) -> int:
    require_archive(args.archive, VOC, "--archive")
    voc_root = args.out / "VOCdevkit" / "VOC2012"
    extract(args.archive, args.out, [voc_root / folder for folder in VOC_LAYOUT], args.force)
    require_layout(voc_root, VOC_LAYOUT, f"is {args.archive} {VOC.files}?")
    print(f"VOC 2012 is in {voc_root}: pass dataset.root={voc_root}")
    print_next_steps(f"dataset=voc dataset.root={voc_root}")
    return 0


# --- sbd --------------------------------------------------------------------------------

def write_sbd_masks(ids: Sequence[str], voc_root: Path, sbd_root: Path, force: bool
                    ) -> list[str]:
    """Write ``SegmentationClassAug/<id>.png`` (VOC palette) from SBD's ``cls/<id>.mat`` for
    every id without a VOC mask, whose own (finer, outlined) mask wins. Returns problems."""
    out_dir = voc_root / "SegmentationClassAug"
    out_dir.mkdir(exist_ok=True)
    unlabelled = [i for i in ids if not (voc_root / "SegmentationClass" / f"{i}.png").is_file()]
    todo = [i for i in unlabelled if force or not (out_dir / f"{i}.png").is_file()]
    print(f"SBD masks: {len(unlabelled) - len(todo)} of {len(unlabelled)} already in {out_dir}")
    palette = flat_palette()
    problems = []
    for sample_id in with_progress(todo, len(todo), "SBD masks converted"):
        try:
            mask = read_sbd_mat(sbd_root / "dataset" / "cls" / f"{sample_id}.mat")
        except SampleError as error:
            problems.append(str(error))
            continue
        label = Image.fromarray(mask)
        label.putpalette(palette)  # turns the "L" image into a "P" image
        save_png(label, out_dir / f"{sample_id}.png")
    return problems


def copy_sbd_images(ids: Sequence[str], voc_root: Path, sbd_root: Path) -> list[str]:
    """Copy SBD's ``img/<id>.jpg`` into VOC's JPEGImages where VOC lacks it. Returns problems."""
    images = voc_root / "JPEGImages"
    missing = [i for i in ids if not (images / f"{i}.jpg").is_file()]
    print(f"SBD images: {len(missing)} to copy into {images}")
    problems = []
    for sample_id in with_progress(missing, len(missing), "SBD images copied"):
        source = sbd_root / "dataset" / "img" / f"{sample_id}.jpg"
        if source.is_file():
            copy_file(source, images / f"{sample_id}.jpg")
        else:
            problems.append(f"{source}: image file not found")
    return problems


def prepare_sbd(args: argparse.Namespace) -> int:
    voc_root = require_folder(args.voc_root, "VOC 2012 folder", "run `prepare_data.py voc` "
                              "first, or pass the VOCdevkit/VOC2012 folder to --voc-root")
    if args.sbd_root is None:
        require_archive(args.archive, SBD, "--archive")
        sbd_root = args.out / "benchmark_RELEASE"
        extract(args.archive, args.out, [sbd_root / path for path in SBD_LAYOUT], args.force)
        fix = f"is {args.archive} {SBD.files}?"
    else:
        sbd_root = require_folder(args.sbd_root, "SBD folder", "pass the extracted "
                                  "benchmark_RELEASE folder to --sbd-root, or benchmark.tgz to "
                                  "--archive")
        fix = "pass the benchmark_RELEASE folder of SBD to --sbd-root"
    require_layout(sbd_root, SBD_LAYOUT, fix)

    ids = train_aug_ids(voc_root, sbd_root)
    problems = write_sbd_masks(ids, voc_root, sbd_root, args.force)
    problems += copy_sbd_images(ids, voc_root, sbd_root)
    if problems:  # no train_aug.txt: the reader would otherwise list unusable samples
        return report_problems(problems, "SBD samples could not be merged")
    # written last, so that its presence means the merge is complete
    write_text(voc_root / TRAIN_AUG_LIST, "".join(f"{sample_id}\n" for sample_id in ids))
    print(f"wrote {len(ids)} ids to {voc_root / TRAIN_AUG_LIST}")
    print_next_steps(f"dataset=voc_aug dataset.root={voc_root} dataset.sbd_root={sbd_root}")
    return 0


# --- cityscapes -------------------------------------------------------------------------

def train_ids_path(label_ids: Path) -> Path:
    return label_ids.with_name(label_ids.name.removesuffix(LABEL_IDS_SUFFIX) + TRAIN_IDS_SUFFIX)


def write_train_ids(label_ids: Path, lut: np.ndarray) -> str | None:
    """Write the labelTrainIds PNG next to a labelIds PNG, mapped through ``lut`` (-1: a
    value Cityscapes never uses). Runs in a Pool worker; returns a problem or None."""
    try:
        raw = read_label_image(label_ids)
    except SampleError as error:
        return str(error)
    if raw.ndim != 2:
        return f"{label_ids}: RGB image where a one-channel labelIds PNG was expected"
    counts = np.bincount(raw.ravel(), minlength=256)
    unknown = np.flatnonzero((counts > 0) & (lut < 0))
    if unknown.size:
        return f"{label_ids}: values {describe_values(unknown)} are not Cityscapes labelIds"
    train_ids = lut.clip(0, 255).astype(np.uint8)[raw]
    save_png(Image.fromarray(train_ids), train_ids_path(label_ids))  # uint8 HW: mode "L"
    return None


def convert_label_ids(root: Path, force: bool, workers: int) -> list[str]:
    """Write ``*_gtFine_labelTrainIds.png`` for every ``gtFine/*/*/*_gtFine_labelIds.png``
    in parallel (5000 files of 2048x1024 in the real set). Returns problems."""
    gt_fine = root / "gtFine"
    sources = sorted(gt_fine.glob(f"*/*/*{LABEL_IDS_SUFFIX}"))
    if not sources:
        raise PrepareError(f"no *{LABEL_IDS_SUFFIX} files in {gt_fine}/<split>/<city>/; "
                           f"extract gtFine_trainvaltest.zip into {root}")
    todo = [path for path in sources if force or not train_ids_path(path).is_file()]
    print(f"labelTrainIds: {len(sources) - len(todo)} of {len(sources)} already written")
    if not todo:
        return []
    convert = partial(write_train_ids, lut=label_id_lut())
    with Pool(max(1, min(workers, len(todo)))) as pool:
        results = pool.imap_unordered(convert, todo, chunksize=8)
        return [problem for problem in with_progress(results, len(todo), "labelIds converted")
                if problem]


def prepare_cityscapes(args: argparse.Namespace) -> int:
    if args.root is None:
        root = args.out
        for archive in args.archives:
            require_archive(archive, CITYSCAPES, "--archives")
        for archive in args.archives:
            done_when = [root / folder for folder in zip_folders(archive, depth=2)]
            extract(archive, root, done_when, args.force)
        require_layout(root, ("gtFine", "leftImg8bit"), f"pass {CITYSCAPES.files} to --archives")
    else:
        root = require_folder(args.root, "Cityscapes folder", "pass the folder holding gtFine/ "
                              "and leftImg8bit/ to --root, or the zips to --archives")
    problems = convert_label_ids(root, args.force, args.workers)
    if problems:
        return report_problems(problems, "labelIds files hold values Cityscapes never uses "
                                         "(their labelTrainIds were not written)")
    print_next_steps(f"dataset=cityscapes dataset.root={root}")
    return 0


# --- ade20k -----------------------------------------------------------------------------

def prepare_ade20k(args: argparse.Namespace) -> int:
    require_archive(args.archive, ADE20K, "--archive")
    root = args.out / "ADEChallengeData2016"
    extract(args.archive, args.out, [root / folder for folder in ADE20K_LAYOUT], args.force)
    require_layout(root, ADE20K_LAYOUT, f"is {args.archive} {ADE20K.files}?")
    print_next_steps(f"dataset=ade20k dataset.root={root}")
    return 0


# --- command line -----------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    force = argparse.ArgumentParser(add_help=False)
    force.add_argument("--force", action="store_true", help="redo work whose outputs exist")

    voc = commands.add_parser("voc", parents=[force], help="extract PASCAL VOC 2012")
    voc.add_argument("--archive", type=Path, required=True, help=VOC.files)
    voc.add_argument("--out", type=Path, default=Path("data"), help="default: data")
    voc.set_defaults(run=prepare_voc)

    sbd = commands.add_parser("sbd", parents=[force], help="extract SBD and merge it into VOC")
    source = sbd.add_mutually_exclusive_group(required=True)
    source.add_argument("--archive", type=Path, help=SBD.files)
    source.add_argument("--sbd-root", type=Path, help="an extracted benchmark_RELEASE folder")
    sbd.add_argument("--voc-root", type=Path, required=True, help="the VOCdevkit/VOC2012 folder")
    sbd.add_argument("--out", type=Path, default=Path("data"), help="default: data")
    sbd.set_defaults(run=prepare_sbd)

    cityscapes = commands.add_parser("cityscapes", parents=[force],
                                     help="extract Cityscapes and write labelTrainIds PNGs")
    source = cityscapes.add_mutually_exclusive_group(required=True)
    source.add_argument("--archives", type=Path, nargs="+", help=CITYSCAPES.files)
    source.add_argument("--root", type=Path, help="an extracted tree: only convert the labels")
    cityscapes.add_argument("--out", type=Path, default=Path("data/cityscapes"),
                            help="default: data/cityscapes")
    cityscapes.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                            help="conversion processes (default: all CPU cores)")
    cityscapes.set_defaults(run=prepare_cityscapes)

    ade20k = commands.add_parser("ade20k", parents=[force], help="extract ADE20K")
    ade20k.add_argument("--archive", type=Path, required=True, help=ADE20K.files)
    ade20k.add_argument("--out", type=Path, default=Path("data"), help="default: data")
    ade20k.set_defaults(run=prepare_ade20k)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a problem the user can fix is one line on stderr and status 1."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (PrepareError, FileNotFoundError) as error:  # seg's readers name file and fix
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
