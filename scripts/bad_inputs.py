"""Hand every command the bad inputs a careless user or an attacker would, and tabulate
what each answers: the exit status and the message. Writes the README's reliability table.

    python scripts/bad_inputs.py [--out FILE.md]

Each case runs the installed command (``seg-train``, ``seg-predict``, ...) in a fresh
process on small data made here, in a temporary folder. A case fails the script (exit 1)
when the command exits 0 where it should not, prints a traceback or more than one line of
error, or changes a file it was not asked to write.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

BIN = Path(sys.executable).parent
SCRIPTS = Path(__file__).resolve().parent
MESSAGE_WIDTH = 150


@dataclass
class Case:
    """A bad input: what it is, the command line (``{tmp}`` is the work folder), what must
    stay as it was, and whether the command should exit 0 (it skips or renames)."""

    what: str
    command: str
    prepare: Callable[[Path], None] = lambda tmp: None
    kept: tuple[str, ...] = ()
    succeeds: bool = False


class WritesAFile:
    """A pickle that runs code when loaded: it creates ``{tmp}/pwned``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


# -- the inputs -----------------------------------------------------------------------------


def checkpoint_with(where: str, node: dict) -> Callable[[Path], None]:
    """A copy of the trained checkpoint whose config node ``where`` is ``node``."""

    def prepare(tmp: Path) -> None:
        state = torch.load(tmp / "run/checkpoints/best.pt", weights_only=True)
        parent, key = where.rsplit(".", 1)
        container = state["config"]
        for part in parent.split("."):
            container = container[part]
        container[key] = {k: str(v).format(tmp=tmp) if isinstance(v, str) else v
                          for k, v in node.items()}
        (tmp / "payload.pkl").write_bytes(pickle.dumps(WritesAFile(str(tmp / "pwned"))))
        torch.save(state, tmp / "bad.pt")

    return prepare


def checkpoint_holding(content: Callable[[Path], object]) -> Callable[[Path], None]:
    def prepare(tmp: Path) -> None:
        value = content(tmp)
        if value is None:
            (tmp / "bad.pt").write_bytes(b"")
        else:
            torch.save(value, tmp / "bad.pt")

    return prepare


def image_folder(*names: str, broken: tuple[str, bytes] | None = None
                 ) -> Callable[[Path], None]:
    """``{tmp}/images`` with good images ``a.png``, ``b.jpg`` and ``names``, and the
    ``broken`` file."""

    def prepare(tmp: Path) -> None:
        images = tmp / "images"
        images.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        for name in ("a.png", "b.jpg", *names):
            Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(images / name)
        if broken:
            (images / broken[0]).write_bytes(broken[1])

    return prepare


def huge_png() -> bytes:
    """A 15000 x 15000 PNG of a few kB, which a decoder would expand to 675 MB of RGB."""
    return png_of(15000, 15000)


def png_of(width: int, height: int) -> bytes:
    """A black-and-white PNG of ``width`` x ``height``: a few kB, however large."""
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def dataset_copy(change: Callable[[Path], None]) -> Callable[[Path], None]:
    """``{tmp}/data``: the tiny dataset, changed by ``change(root)``."""

    def prepare(tmp: Path) -> None:
        import shutil

        shutil.copytree(tmp / "shapes", tmp / "data", dirs_exist_ok=True)
        change(tmp / "data")

    return prepare


def first_val_image(root: Path) -> Path:
    first = (root / "ImageSets/Segmentation/val.txt").read_text().split()[0]
    return root / "JPEGImages" / f"{first}.jpg"


def append_to_split(line: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        with open(root / "ImageSets/Segmentation/val.txt", "a") as split:
            split.write(line.format(id=(root / "ImageSets/Segmentation/val.txt")
                                    .read_text().split()[0]) + "\n")

    return change


def tar_with(member: Callable[[tarfile.TarInfo], None], data: bytes = b"") -> Callable:
    """``{tmp}/voc.tar``: a VOC-looking archive with one crafted member."""

    def prepare(tmp: Path) -> None:
        with tarfile.open(tmp / "voc.tar", "w") as tar:
            good = tarfile.TarInfo("VOCdevkit/VOC2012/JPEGImages/a.jpg")
            tar.addfile(good, io.BytesIO(b""))
            crafted = tarfile.TarInfo("VOCdevkit/VOC2012/JPEGImages/b.jpg")
            member(crafted)
            crafted.size = len(data) if crafted.isreg() else 0
            tar.addfile(crafted, io.BytesIO(data) if crafted.isreg() else None)

    return prepare


def zip_with_symlink(tmp: Path) -> None:
    with zipfile.ZipFile(tmp / "ade.zip", "w") as archive:
        link = zipfile.ZipInfo("ADEChallengeData2016/images/link")
        link.external_attr = (0o120777 << 16)  # S_IFLNK: a symbolic link
        archive.writestr(link, "/etc")


def symlink(member: tarfile.TarInfo) -> None:
    member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"


def parent_path(member: tarfile.TarInfo) -> None:
    member.name = "../../escaped.txt"


def existing_file(name: str, data: bytes = b"an earlier result") -> Callable[[Path], None]:
    def prepare(tmp: Path) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)

    return prepare


def last_checkpoint_at(iteration: int) -> Callable[[Path], None]:
    """The trained run's last.pt moved on to ``iteration`` (newer than its best.pt)."""

    def prepare(tmp: Path) -> None:
        state = torch.load(tmp / "run/checkpoints/last.pt", weights_only=True)
        state["iteration"] = iteration
        torch.save(state, tmp / "run/checkpoints/last.pt")

    return prepare


def link(name: str, target: str) -> Callable[[Path], None]:
    def prepare(tmp: Path) -> None:
        (tmp / name).symlink_to(tmp / target)

    return prepare


def truncated(name: str) -> Callable[[Path], None]:
    def prepare(tmp: Path) -> None:
        data = (tmp / name).read_bytes()
        (tmp / name).write_bytes(data[:len(data) // 2])

    return prepare


def both(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def prepare(tmp: Path) -> None:
        for step in steps:
            step(tmp)

    return prepare


def study_sweep(change: Callable[[Path], None] = lambda run: None) -> Callable[[Path], None]:
    """``{tmp}/sweep``: the trained run as a study sweep's run ``0_seed=0`` (its config and
    metrics.json), changed by ``change(that run's folder)``."""

    def prepare(tmp: Path) -> None:
        import shutil

        run = tmp / "sweep/0_seed=0"
        (run / ".hydra").mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp / "run/.hydra/config.yaml", run / ".hydra/config.yaml")
        shutil.copy(tmp / "run/metrics.json", run / "metrics.json")
        change(run)

    return prepare


def replaced_by(name: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    """``change`` for :func:`study_sweep`: the run's file ``name`` made anew by ``make``."""

    def change(run: Path) -> None:
        (run / name).unlink()
        make(run / name)

    return change


def run_config_with(text: str) -> Callable[[Path], None]:
    """``change`` for :func:`study_sweep`: ``text`` added to the run's config."""

    def change(run: Path) -> None:
        with open(run / ".hydra/config.yaml", "a") as config:
            config.write(text)

    return change


STUDY_ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]\n"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True))
PRETRAIN = ("seg-pretrain debug=tiny dataset.root={tmp}/shapes +pretrain.iterations=2 "
            "+pretrain.batch_size=2 +pretrain.lr=0.01 hydra.run.dir={tmp}/encoder")


CKPT = "checkpoint={tmp}/bad.pt"
GOOD = "checkpoint={tmp}/run/checkpoints/best.pt"
PREDICT = "seg-predict input={tmp}/images output={tmp}/masks progress=false"
TRAIN = "seg-train debug=tiny dataset.root={tmp}/shapes hydra.run.dir={tmp}/new"
SPLITS = "seg-data check dataset.root={tmp}/data"
RESUME = "seg-train debug=tiny dataset.root={tmp}/shapes trainer.resume={tmp}/run"
# an EXIF block holding only Orientation (0x0112) = 6: viewers show the image turned 90°
EXIF_ROTATED_90 = (b"Exif\0\0MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03"
                   b"\0\0\0\x01\0\x06\0\0\0\0\0\0")

SHAPES_CLASSES = ("background", "disk", "rectangle", "triangle", "ring", "line", "dot", "cross")
FOLDER_CHECK = "seg-data check dataset=folder dataset.root={tmp}/folder"
FOLDER_TRAIN = ("seg-train debug=tiny dataset=folder dataset.root={tmp}/folder "
                "hydra.run.dir={tmp}/new")


def folder_copy(change: Callable[[Path], None]) -> Callable[[Path], None]:
    """``{tmp}/folder``: the tiny dataset as a folder dataset (images/, masks/, classes.yaml,
    splits/{train,val}.txt), changed by ``change(root)``."""

    def prepare(tmp: Path) -> None:
        import shutil

        root = tmp / "folder"
        shutil.copytree(tmp / "shapes/JPEGImages", root / "images")
        shutil.copytree(tmp / "shapes/SegmentationClass", root / "masks")
        shutil.copytree(tmp / "shapes/ImageSets/Segmentation", root / "splits")
        (root / "classes.yaml").write_text("classes: [" + ", ".join(
            f"{{name: {name}}}" for name in SHAPES_CLASSES) + "]\n")
        change(root)

    return prepare


def val_ids_in_train(root: Path) -> None:
    lists = root / "ImageSets/Segmentation"
    (lists / "train.txt").write_text((lists / "train.txt").read_text()
                                     + (lists / "val.txt").read_text())


def image_named_to_drive_a_terminal(root: Path) -> None:
    """An image (that does not decode) and mask named ``ESC[2J`` (clear the screen), a
    newline, ``INFO fake``; no split lists (an id listed cannot hold them)."""
    import shutil

    shutil.rmtree(root / "splits")
    (root / "images/\x1b[2J\nINFO fake.jpg").write_bytes(b"not an image")
    (root / "masks/\x1b[2J\nINFO fake.png").write_bytes(b"not a mask")


def first_folder_val(root: Path) -> str:
    return (root / "splits/val.txt").read_text().split()[0]


def float_tiff_image(root: Path) -> None:
    """The first val image as a float32 TIFF in [0, 1], its mask as a uint16 PNG."""
    stem = first_folder_val(root)
    pixels = np.asarray(Image.open(root / f"images/{stem}.jpg"), np.float32) / 255
    (root / f"images/{stem}.jpg").unlink()
    import cv2

    cv2.imwrite(str(root / f"images/{stem}.tif"), pixels[..., ::-1])
    labels = np.asarray(Image.open(root / f"masks/{stem}.png"), np.uint16)
    Image.fromarray(labels).save(root / f"masks/{stem}.png")


CASES = [
    # checkpoints are data
    Case("checkpoint: `model.encoder` is `numpy.savetxt` (writes a file)",
         f"{PREDICT} {CKPT}", both(image_folder(), checkpoint_with("model.encoder", {
             "_target_": "numpy.savetxt", "fname": "{tmp}/pwned", "X": [1.0]}))),
    Case("checkpoint: `model.decoder` is `torch.load` of a malicious pickle",
         f"{PREDICT} {CKPT}", both(image_folder(), checkpoint_with("model.decoder", {
             "_target_": "torch.load", "f": "{tmp}/payload.pkl", "weights_only": False}))),
    Case("checkpoint: `model.upsampler` is `builtins.open(mode=w)` (truncates a file)",
         "seg-export output={tmp}/model.onnx " + CKPT, both(existing_file("victim.txt"),
         checkpoint_with("model.upsampler", {
             "_target_": "builtins.open", "file": "{tmp}/victim.txt", "mode": "w"})),
         kept=("victim.txt",)),
    Case("checkpoint: `dataset.val` is `builtins.open(mode=w)`",
         f"seg-eval {CKPT}", both(existing_file("victim.txt"), checkpoint_with(
             "dataset.val", {"_target_": "builtins.open", "file": "{tmp}/victim.txt",
                             "mode": "w"})), kept=("victim.txt",)),
    Case("checkpoint: a zero-byte .pt", f"{PREDICT} {CKPT}",
         both(image_folder(), checkpoint_holding(lambda tmp: None))),
    Case("checkpoint: a .pt holding a tensor", f"seg-eval {CKPT}",
         checkpoint_holding(lambda tmp: torch.zeros(3))),
    Case("checkpoint: a .pt holding a list", "seg-export output={tmp}/m.onnx " + CKPT,
         checkpoint_holding(lambda tmp: [1, 2])),
    Case("checkpoint: a bare state_dict", f"{PREDICT} {CKPT}", both(image_folder(),
         checkpoint_holding(lambda tmp: torch.load(tmp / "run/checkpoints/best.pt",
                                                   weights_only=True)["model"]))),
    # archives
    Case("archive: a tar with a symlink member", "python " + str(SCRIPTS / "prepare_data.py")
         + " voc --archive {tmp}/voc.tar --out {tmp}/extracted", tar_with(symlink)),
    Case("archive: a tar member `../../escaped.txt`", "python " + str(SCRIPTS / "prepare_data.py")
         + " voc --archive {tmp}/voc.tar --out {tmp}/extracted", tar_with(parent_path, b"x")),
    Case("archive: a zip with a symlink entry", "python " + str(SCRIPTS / "prepare_data.py")
         + " ade20k --archive {tmp}/ade.zip --out {tmp}/extracted", zip_with_symlink),
    # images
    Case("image: zero bytes, in a folder to segment (the others are written)",
         f"{PREDICT} {GOOD}", image_folder(broken=("empty.png", b""))),
    Case("image: a 15000x15000 PNG of a few kB, in a folder to segment",
         f"{PREDICT} {GOOD}", image_folder(broken=("huge.png", huge_png()))),
    Case("image: zero bytes in the val split, seg-train", TRAIN.replace("shapes", "data"),
         dataset_copy(lambda root: first_val_image(root).write_bytes(b""))),
    Case("image: zero bytes in the val split, seg-data check", SPLITS,
         dataset_copy(lambda root: first_val_image(root).write_bytes(b""))),
    Case("split: an id `../../secret`", SPLITS, dataset_copy(append_to_split("../../secret"))),
    Case("split: an id listed twice", SPLITS, dataset_copy(append_to_split("{id}"))),
    # outputs
    Case("seg-predict `output=` the input folder",
         f"seg-predict input={{tmp}}/images output={{tmp}}/images {GOOD}", image_folder(),
         kept=("images/a.png", "images/b.jpg")),
    Case("seg-predict: `x.jpg` and `x.png` in one folder (written as x_jpg.png, x_png.png)",
         f"{PREDICT} {GOOD}", image_folder("x.jpg", "x.png"), succeeds=True),
    Case("seg-predict into a folder holding an earlier run's masks", f"{PREDICT} {GOOD}",
         both(image_folder(), existing_file("masks/a.png")), kept=("masks/a.png",)),
    Case("seg-predict `output=` an existing file", f"{PREDICT.replace('masks', 'taken')} {GOOD}",
         both(image_folder(), existing_file("taken")), kept=("taken",)),
    Case("seg-predict `output=` a folder that cannot be made",
         f"{PREDICT.replace('{tmp}/masks', '/proc/seg-masks')} {GOOD}", image_folder()),
    Case("seg-train into a run folder that holds a run", TRAIN.replace("{tmp}/new", "{tmp}/run"),
         kept=("run/checkpoints/last.pt", "run/checkpoints/best.pt", "run/metrics.json")),
    Case("seg-export `output=` an existing file", f"seg-export output={{tmp}}/m.onnx {GOOD}",
         existing_file("m.onnx"), kept=("m.onnx",)),
    # settings
    *(Case(f"setting `{override}`", f"{TRAIN} {override}") for override in (
        "trainer.max_iters=abc", "trainer.max_iters=-5", "trainer.eval_every=0", "seed=abc",
        "trainer.device=cuda", "dataset.crop_size=0", "dataset.root={tmp}/run/metrics.json")),
    *(Case(f"setting `{override}`", f"{PREDICT} {GOOD} {override}", image_folder()) for override
      in ("overlay_alpha=5", "batch_size=0", "inference=slide inference.crop=0")),
    Case("setting `opset=5`", f"seg-export output={{tmp}}/m.onnx opset=5 {GOOD}"),
    # -- readers: special files, sizes, archive bombs, EXIF
    Case("reader: a FIFO named x.png in a folder to segment (the others are written)",
         f"{PREDICT} {GOOD}", both(image_folder(), lambda tmp: subprocess.run(
             ["mkfifo", str(tmp / "images/x.png")], check=True)), kept=("images/a.png",)),
    Case("reader: x.png -> /dev/zero in a folder to segment (the others are written)",
         f"{PREDICT} {GOOD}", both(image_folder(), lambda tmp: (
             tmp / "images/x.png").symlink_to("/dev/zero")), kept=("images/a.png",)),
    Case("reader: a FIFO as the image of an id in the val split, seg-data check", SPLITS,
         dataset_copy(both(append_to_split("fifo"), lambda root: subprocess.run(
             ["mkfifo", str(root / "JPEGImages/fifo.jpg")], check=True)))),
    Case("reader: a .tgz whose 16 MiB of zeros pack into 16 kB (a decompression bomb)",
         "python " + str(SCRIPTS / "prepare_data.py") + " voc --archive {tmp}/voc.tgz --out "
         "{tmp}/extracted", lambda tmp: subprocess.run(
             "mkdir -p bomb/VOCdevkit && head -c 16M /dev/zero > bomb/VOCdevkit/a.jpg && "
             "tar -czf voc.tgz -C bomb VOCdevkit", shell=True, check=True, cwd=tmp)),
    Case("reader: a val image of EXIF orientation 6, its mask as stored, seg-data check "
         "(a warning)", SPLITS, dataset_copy(lambda root: Image.open(first_val_image(root))
              .save(first_val_image(root), exif=EXIF_ROTATED_90)), succeeds=True),
    Case("reader: a 64x48 val image of EXIF orientation 6 whose mask is 48x64, seg-train",
         TRAIN.replace("shapes", "data"), dataset_copy(both(
             lambda root: Image.open(first_val_image(root)).crop((0, 0, 64, 48)).save(
                 first_val_image(root), exif=EXIF_ROTATED_90),
             lambda root: Image.open(root / "SegmentationClass" / (
                 first_val_image(root).stem + ".png")).crop((0, 0, 48, 64)).save(
                 root / "SegmentationClass" / (first_val_image(root).stem + ".png"))))),
    Case("reader: a val split file starting with a BOM (U+FEFF), seg-data check", SPLITS,
         dataset_copy(lambda root: (split := root / "ImageSets/Segmentation/val.txt")
                      .write_text("\ufeff" + split.read_text())), succeeds=True),
    # -- seg-predict, seg-eval, seg-export outputs: links, streaming, skipped files
    Case("outputs: seg-predict overwrite=true, `masks/a.png -> ../images/a.png` (an input)",
         f"{PREDICT} {GOOD} overwrite=true", both(image_folder(), lambda tmp: (
             (tmp / "masks").mkdir(), (tmp / "masks/a.png").symlink_to("../images/a.png"))),
         kept=("images/a.png",)),
    Case("outputs: seg-predict overwrite=true, `masks/a.png` a link to a file outside",
         f"{PREDICT} {GOOD} overwrite=true", both(image_folder(), existing_file("victim.txt"),
         lambda tmp: (tmp / "masks").mkdir() or (tmp / "masks/a.png").symlink_to(
             tmp / "victim.txt")), kept=("victim.txt",)),
    Case("outputs: seg-export overwrite=true, `output=` a link to a file outside",
         f"seg-export output={{tmp}}/m.onnx overwrite=true {GOOD}", both(
             existing_file("victim.txt"), lambda tmp: (tmp / "m.onnx").symlink_to(
                 tmp / "victim.txt")), kept=("victim.txt",)),
    Case("outputs: seg-eval into a folder holding an earlier eval.json",
         f"seg-eval {GOOD} output_dir={{tmp}}/evaluated", existing_file("evaluated/eval.json"),
         kept=("evaluated/eval.json",)),
    Case("outputs: seg-predict, a folder with a subfolder and a .txt (they are named)",
         f"{PREDICT} {GOOD}", both(image_folder(), lambda tmp: (tmp / "images/sub").mkdir(),
                                   existing_file("images/notes.txt")), succeeds=True),
    Case("outputs: seg-predict, 12 images of 12 sizes (a batch held at a time)",
         f"{PREDICT} {GOOD}", both(image_folder(), lambda tmp: [Image.fromarray(
             np.zeros((20 + size, 30, 3), np.uint8)).save(tmp / f"images/s{size}.png")
             for size in range(12)]), succeeds=True),
    # -- start-up errors, classes.yaml, YAML, terminal escapes
    *(Case(f"start-up: classes.yaml {what}", TRAIN.replace(
        "dataset.root={tmp}/shapes", "dataset=folder dataset.root={tmp}/folder"),
        existing_file("folder/classes.yaml", text.encode())) for what, text in (
        ("`color: [300, 0, 0]`", "classes: [{name: a, color: [0, 0, 0]}, "
                                 "{name: b, color: [300, 0, 0]}]"),
        ("a 2-element `color`", "classes: [{name: a, color: [0, 0, 0]}, "
                                "{name: b, color: [255, 0]}]"),
        ("`ignore_color: white`", "classes: [{name: a, color: [0, 0, 0]}]\nignore_color: white"),
        ("a 454-byte alias bomb (a billion laughs)", "a0: &a0 [" + ",".join(['"lol"'] * 9)
         + "]\n" + "".join(f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]\n" for i in
                           range(1, 9)) + "classes: [{name: *a8}]"),
        ("a class name `\\e[2J\\nINFO fake` (terminal escapes)",
         'classes: [{name: a}, {name: "\\e[2J\\nINFO fake"}]'),
        ("with a YAML syntax error", "classes: [\n  - {name: a\n"))),
    *(Case(f"start-up: seg-train `{override.format()}`", f"{TRAIN} {override}") for override in (
        "dataset.root=${{oc.env:SEG_NO_SUCH_VARIABLE}}", "~trainer", "+trainer.foo=1",
        "+model.encoder.foo=1", "hydra.run.dir=/proc/seg-run",
        "hydra.run.dir=/sys/seg-run")),
    Case("start-up: seg-train `hydra.run.dir=` an existing file",
         f"{TRAIN} hydra.run.dir={{tmp}}/taken", existing_file("taken"), kept=("taken",)),
    *(Case(f"start-up: {name} `inference=multiscale inference.scales=[0.0001,50]`",
           f"{command} inference=multiscale inference.scales=[0.0001,50]", image_folder())
      for name, command in (("seg-predict", f"{PREDICT} {GOOD}"),
                            ("seg-eval", f"seg-eval {GOOD}"))),
    Case("start-up: seg-compare --aggregate, a run's metrics.json cut short",
         "seg-compare --aggregate {tmp}/sweep", both(
             existing_file("sweep/0_seed=0/.hydra/config.yaml", b"seed: 0\n"),
             existing_file("sweep/0_seed=0/metrics.json", b'{"mIoU": 0.5, "hist'))),
    # -- run folders: locks, resumes, full disks
    Case("seg-train: resume from best.pt, older than the folder's last.pt",
         "seg-train debug=tiny dataset.root={tmp}/shapes trainer.max_iters=4 "
         "trainer.resume={tmp}/run/checkpoints/best.pt", last_checkpoint_at(6),
         kept=("run/checkpoints/last.pt", "run/.hydra/config.yaml")),
    Case("seg-train: resume with `optimizer.lr=1e6` (the checkpoint decides it)",
         f"{RESUME} optimizer.lr=1e6", kept=("run/checkpoints/last.pt", "run/.hydra/config.yaml")),
    Case("seg-train: `trainer.resume=auto` that fails (a missing dataset root)",
         "seg-train debug=tiny dataset.root={tmp}/nowhere trainer.resume=auto "
         "hydra.run.dir={tmp}/run", kept=("run/.hydra/config.yaml", "run/.hydra/overrides.yaml")),
    Case("seg-train: a link planted at `checkpoints/last.pt.tmp` (resumes, the target kept)",
         f"{RESUME} trainer.max_iters=4", both(existing_file("victim.txt"),
         link("run/checkpoints/last.pt.tmp", "victim.txt")), kept=("victim.txt",),
         succeeds=True),
    Case("seg-train: resume from a truncated last.pt", RESUME,
         truncated("run/checkpoints/last.pt")),
    *(Case(f"setting `{override}`", f"{TRAIN} {override}")
      for override in ("optimizer.lr=fast", "optimizer.lr=-1")),
    # -- the study (seg-compare, seg-pretrain): a sweep folder is hostile data
    Case("study: seg-compare --aggregate, a link planted at compare.md (the target kept)",
         "seg-compare --aggregate {tmp}/sweep",
         both(existing_file("victim.txt"), study_sweep(), link("sweep/compare.md", "victim.txt")),
         kept=("victim.txt",)),
    Case("study: seg-compare --aggregate, a run's .hydra/config.yaml a FIFO",
         "seg-compare --aggregate {tmp}/sweep",
         study_sweep(replaced_by(".hydra/config.yaml", lambda path: subprocess.run(
             ["mkfifo", str(path)], check=True)))),
    Case("study: seg-compare --gaps, a run's metrics.json -> /dev/zero",
         "seg-compare --gaps {tmp}/run {tmp}/sweep",
         study_sweep(replaced_by("metrics.json", lambda path: path.symlink_to("/dev/zero")))),
    Case("study: seg-compare --aggregate, a run config a 400-byte alias bomb",
         "seg-compare --aggregate {tmp}/sweep",
         study_sweep(replaced_by(".hydra/config.yaml",
                                 lambda path: path.write_text(STUDY_ALIAS_BOMB)))),
    Case("study: seg-compare --aggregate, a run config whose seed is a string",
         "seg-compare --aggregate {tmp}/sweep", study_sweep(run_config_with("seed: abc\n"))),
    Case("study: seg-compare --aggregate, a `dataset.name` holding a newline, a command and "
         "ESC (escaped)", "seg-compare --aggregate {tmp}/sweep",
         study_sweep(lambda run: (run / ".hydra/config.yaml").write_text(
             (run / ".hydra/config.yaml").read_text().replace(
                 "  name: shapes", '  name: "shapes\\nrm -rf ~\\e[2J"', 1))),
         succeeds=True),
    Case("study: seg-pretrain into a folder holding a finished encoder.pth (kept)", PRETRAIN,
         existing_file("encoder/encoder.pth"), kept=("encoder/encoder.pth",)),
    # -- dataset readers and seg-data check: split lists, names from the data, stems, TIFFs
    Case("datasets: split lists: folder `train.txt` a FIFO beside `val.txt`, seg-data check",
         FOLDER_CHECK, folder_copy(lambda root: (root / "splits/train.txt").unlink()
                                   or os.mkfifo(root / "splits/train.txt"))),
    Case("datasets: split lists: folder `train.txt` -> /dev/zero beside `val.txt`, seg-train",
         FOLDER_TRAIN, folder_copy(lambda root: (root / "splits/train.txt").unlink()
                                   or (root / "splits/train.txt").symlink_to("/dev/zero"))),
    Case("datasets: split lists: the val ids listed in train.txt too, seg-data check", SPLITS,
         dataset_copy(val_ids_in_train)),
    Case("datasets: names from the data: an image `\\e[2J\\nINFO fake.jpg` that does not decode, "
         "seg-data check", FOLDER_CHECK, folder_copy(image_named_to_drive_a_terminal)),
    Case("datasets: stems: `x.png` beside `x.jpg` in a folder dataset, seg-train", FOLDER_TRAIN,
         folder_copy(lambda root: Image.open(root / f"images/{first_folder_val(root)}.jpg")
                     .save(root / f"images/{first_folder_val(root)}.png"))),
    Case("datasets: TIFF: a float32 val image in [0, 1], its mask uint16, seg-data check (read)",
         FOLDER_CHECK, folder_copy(float_tiff_image), succeeds=True),
    # -- encoder weights: data only, one loader for every encoder, never downloaded
    Case("weights: `model.encoder.weights=` a pickle that runs code",
         f"{TRAIN} model.encoder.weights={{tmp}}/gadget.pth",
         lambda tmp: (tmp / "gadget.pth").write_bytes(
             pickle.dumps(WritesAFile(str(tmp / "pwned"))))),
    Case("weights: `model.encoder.weights=` a .pth holding a list",
         f"{TRAIN} model.encoder.weights={{tmp}}/list.pth",
         lambda tmp: torch.save([torch.zeros(1)], tmp / "list.pth")),
    Case("weights: a .safetensors whose header claims more bytes than the file",
         f"{TRAIN} model.encoder.weights={{tmp}}/w.safetensors",
         existing_file("w.safetensors", (10**9).to_bytes(8, "little") + b"{}")),
    Case("weights: `model.encoder.weights=` a FIFO",
         f"{TRAIN} model.encoder.weights={{tmp}}/fifo.pth",
         lambda tmp: subprocess.run(["mkfifo", str(tmp / "fifo.pth")], check=True)),
    Case("weights: a torchvision ResNet's keys for model/encoder=simple",
         f"{TRAIN} model.encoder.weights={{tmp}}/resnet.pth",
         lambda tmp: torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7),
                                 "fc.weight": torch.zeros(1000, 512)}, tmp / "resnet.pth")),
    Case("weights: timm `weights=imagenet`, nothing cached (no hub is asked)",
         f"{TRAIN} model/encoder=timm model.encoder.model_name=test_efficientnet.r160_in1k "
         "model.encoder.weights=imagenet"),
    Case("weights: prepare_weights.py `--source` a pickle that runs code",
         "python " + str(SCRIPTS / "prepare_weights.py") + " efficientnet-lite0 "
         "--source {tmp}/gadget.pth --out {tmp}/out.pth",
         lambda tmp: (tmp / "gadget.pth").write_bytes(
             pickle.dumps(WritesAFile(str(tmp / "pwned"))))),
    # -- using a trained model: outputs checked before the work, pixel cap, names, advice
    Case("trained: seg-eval `output_dir=` below a file (refused before it evaluates)",
         f"seg-eval {GOOD} output_dir={{tmp}}/run/metrics.json/eval", kept=("run/metrics.json",)),
    Case("trained: seg-eval `output_dir=/sys/seg-eval` (not writable; before it evaluates)",
         f"seg-eval {GOOD} output_dir=/sys/seg-eval"),
    Case("trained: seg-export `output=/sys/m.onnx` (not writable; before it exports)",
         f"seg-export output=/sys/m.onnx {GOOD}"),
    Case("trained: seg-predict, a 4000x4001 PNG over the 16 MP cap (the others written)",
         f"{PREDICT} {GOOD}", image_folder(broken=("big.png", png_of(4000, 4001)))),
    Case("trained: seg-predict, a 249-byte image name (outputs' names over 255 bytes)",
         f"{PREDICT} {GOOD}", image_folder("x" * 245 + ".png"), kept=("images/a.png",)),
    Case("trained: seg-eval, a val mask of label 77 (advises seg-eval's on_error=skip)",
         f"seg-eval {GOOD} dataset_root={{tmp}}/data", dataset_copy(lambda root: Image.fromarray(
             np.full((64, 64), 77, np.uint8)).save(
             root / "SegmentationClass" / f"{first_val_image(root).stem}.png"))),
    # -- training runs: rewinds, failed resumes, skipped steps, settings, start-up faults
    Case("training: a second rewind to iteration 6 (last_iteration_6.pt kept, last.pt as _2)",
         "seg-train debug=tiny dataset.root={tmp}/shapes trainer.max_iters=4 trainer.rewind=true "
         "trainer.resume={tmp}/run/checkpoints/best.pt", both(
             last_checkpoint_at(6), existing_file("run/checkpoints/last_iteration_6.pt")),
         kept=("run/checkpoints/last_iteration_6.pt",), succeeds=True),
    Case("training: a resume failing after Hydra rewrote .hydra/ (`scheduler.power=-1`)",
         f"{RESUME} trainer.max_iters=6 scheduler.power=-1",
         kept=("run/.hydra/config.yaml", "run/.hydra/hydra.yaml", "run/.hydra/overrides.yaml")),
    Case("training: `trainer.on_nan=skip` with `dataset.std=[1e-45,1e-45,1e-45]` (every step "
         "NaN, none applied)", f"{TRAIN} trainer.on_nan=skip dataset.std=[1e-45,1e-45,1e-45]",
         succeeds=True),
    *(Case(f"training: setting `{override}`", f"{TRAIN} {override}") for override in (
        "seed=-1", "seed=1180591620717411303424", "trainer.device=meta", "scheduler.power=-1",
        "dataset.mean=[0,0]", "dataset.std=0", "imports=[.foo]", 'imports=[""]',
        "+callbacks.x._target_=builtins.print")),
    Case("training: a full disk as a run starts (Hydra's .hydra/ files, RLIMIT_FSIZE)",
         "python {tmp}/disk_full.py debug=tiny dataset.root={tmp}/shapes hydra.run.dir={tmp}/new",
         existing_file("disk_full.py", b"import resource, signal, sys\n"
                       b"signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                       b"resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))\n"
                       b"from seg.cli.train import main\n"
                       b"sys.argv = ['seg-train', *sys.argv[1:]]\nmain()\n")),
    Case("training: SIGTERM as a run starts (before the loop takes the signals over)",
         "python {tmp}/sigterm.py debug=tiny dataset.root={tmp}/shapes hydra.run.dir={tmp}/new",
         existing_file("sigterm.py", b"import os, signal, sys\nimport seg.training as t\n"
                       b"t.check_dataset_root = lambda *a: os.kill(os.getpid(), signal.SIGTERM)\n"
                       b"from seg.cli.train import main\n"
                       b"sys.argv = ['seg-train', *sys.argv[1:]]\nmain()\n")),
    Case("training: `checkpoints/.last.pt.k2x9abcd.tmp` a killed save left (removed, resumes)",
         f"{RESUME} trainer.max_iters=4",
         existing_file("run/checkpoints/.last.pt.k2x9abcd.tmp", b"half a save"), succeeds=True),
    Case("training: a FIFO as `metrics.json` under `trainer.resume=auto`",
         "seg-train debug=tiny dataset.root={tmp}/shapes trainer.resume=auto "
         "hydra.run.dir={tmp}/run", lambda tmp: ((tmp / "run/metrics.json").unlink(),
                                                  os.mkfifo(tmp / "run/metrics.json"))),
    # -- more cases above this line (each rule's cases grouped under a comment)
]


# -- running them ---------------------------------------------------------------------------


def setup(tmp: Path) -> None:
    """The tiny dataset and a trained checkpoint every case starts from."""
    from seg.data.synthetic.shapes import generate_shapes

    generate_shapes(tmp / "shapes", num_train=8, num_val=4, image_size=64, seed=0)
    subprocess.run([str(BIN / "seg-train"), "debug=tiny", f"dataset.root={tmp}/shapes",
                    f"hydra.run.dir={tmp}/run"], check=True, capture_output=True)


def run_case(case: Case, tmp: Path) -> tuple[int, str, list[str]]:
    """Exit status, the error message and what went wrong (empty when all held)."""
    case.prepare(tmp)
    kept = {name: (tmp / name).read_bytes() for name in case.kept}
    words = case.command.format(tmp=tmp).split()
    program = [sys.executable] if words[0] == "python" else [str(BIN / words[0])]
    done = subprocess.run([*program, *words[1:]], capture_output=True, text=True,
                          cwd=tmp, timeout=300)
    problems = []
    if "Traceback" in done.stderr:
        problems.append("traceback")
    if (done.returncode == 0) != case.succeeds:
        problems.append(f"exit status {done.returncode}")
    if (tmp / "pwned").exists() or (tmp.parent / "escaped.txt").exists():
        problems.append("code ran or a file escaped")
    problems += [f"{name} changed" for name, data in kept.items()
                 if (tmp / name).read_bytes() != data]
    return done.returncode, cause_line(done).replace(str(tmp), "…"), problems


def cause_line(done: subprocess.CompletedProcess) -> str:
    """The line that names what went wrong: the error, else the first file skipped or
    problem listed (before any summary), else the last two lines of stderr or stdout."""
    errors = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    output = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    for line in errors + output:
        if line.startswith("error:"):
            return line
    for line in errors + output:
        if "skipped " in line or line.startswith(("[train]", "[val]")):
            return line[line.index("skipped "):] if "skipped " in line else line
    return " / ".join(errors[-2:]) if errors else (output or [""])[-1]


def table(rows: list[tuple[Case, int, str]]) -> str:
    lines = ["| bad input | exit | message |", "|---|---|---|"]
    for case, code, message in rows:
        short = message if len(message) <= MESSAGE_WIDTH else message[:MESSAGE_WIDTH - 1] + "…"
        lines.append(f"| {case.what} | {code} | {short.replace('|', '/')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--only", metavar="TEXT",
                        help="run only the cases whose description holds TEXT")
    args = parser.parse_args(argv)
    cases = [case for case in CASES if args.only is None or args.only in case.what]
    start = time.perf_counter()
    rows, failures = [], []
    with tempfile.TemporaryDirectory() as base:
        setup(Path(base))
        for index, case in enumerate(cases):
            tmp = Path(base) / f"case{index}"
            tmp.mkdir()
            subprocess.run(["cp", "-r", f"{base}/shapes", f"{base}/run", str(tmp)], check=True)
            code, message, problems = run_case(case, tmp)
            rows.append((case, code, message))
            failures += [f"{case.what}: {problem}" for problem in problems]
            print(f"{code:3d}  {case.what}: {message[:120]}", flush=True)
    text = table(rows)
    print(f"\n{text}\n\n{len(cases)} cases in {time.perf_counter() - start:.0f} s")
    if args.out:
        args.out.write_text(text + "\n")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
