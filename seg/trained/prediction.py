"""Predicting folders of images: same-size images batched together, and each image's mask
and overlay written without replacing an input or (unless asked) an earlier result.

Images are decoded in folder order and at most ``batch_size`` of them are held at once, so
memory is bounded by the batch, not by the folder; each batch's outputs are written as soon
as it is through the model. Every output goes through :func:`seg.files.write_file`: never
through a link, never half-written."""

from __future__ import annotations

import io
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from seg.data.decoding import MAX_IMAGE_PIXELS, SampleError, read_image
from seg.data.readers.folder import IMAGE_SUFFIXES
from seg.drawing import overlay_with_legend
from seg.errors import BadValue, MissingPath, NotAFolder, PathExists
from seg.files import NAME_MAX, refuse_unless_replaceable, write_file
from seg.text import printable
from seg.trained.checkpoint import model_from_checkpoint
from seg.trained.inference import Inference, out_of_memory

# What each image gives, after its name: the palette mask and the overlay.
OUTPUT_SUFFIXES = (".png", "_overlay.jpg")
SHOWN_SUFFIXES = 6  # a note names at most this many of the suffixes it skipped


def counted(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@dataclass
class Inputs:
    """The images to segment, the folder their output names are relative to, and what the
    listing skipped, so that nothing is left out without a word."""

    root: Path
    files: list[Path] = field(default_factory=list)
    subfolders: int = 0  # not entered (recursive=false)
    folder_links: int = 0  # never followed: a link may lead back up (a loop) or anywhere
    others: Counter[str] = field(default_factory=Counter)  # files of other types, by suffix

    def note(self) -> str | None:
        """One line of what was skipped and why, or None when nothing was."""
        parts = []
        if self.subfolders:
            parts.append(f"{counted(self.subfolders, 'subfolder')} (recursive=true "
                         "segments them)")
        if self.folder_links:
            parts.append(f"{counted(self.folder_links, 'link')} to folders (links to "
                         "folders are not followed)")
        if self.others:
            suffixes = sorted(self.others)
            shown = ", ".join(suffixes[:SHOWN_SUFFIXES]) + (
                ", ..." if len(suffixes) > SHOWN_SUFFIXES else "")
            parts.append(f"{counted(sum(self.others.values()), 'non-image file')} "
                         f"({shown}; images are {', '.join(IMAGE_SUFFIXES)})")
        return f"skipped in {self.root}: {' and '.join(parts)}" if parts else None


def image_files(source: str | Path, recursive: bool = False, exclude: Path | None = None
                ) -> Inputs:
    """``source`` itself, or the images in the folder ``source`` (and, when ``recursive``,
    in its subfolders), sorted by path. ``exclude`` is the output folder: when it lies
    inside ``source``, its masks are not taken for inputs."""
    source = Path(source)
    try:
        kind = os.stat(source).st_mode
    except FileNotFoundError:
        kind = None  # or a broken link (below)
    except OSError as error:  # a name too long, a loop of links, no permission
        raise BadValue(f"input={printable(source)} cannot be read ({error.strerror}): pass "
                       "an image or a folder of them") from None
    if kind is not None and stat.S_ISREG(kind):
        return Inputs(source.parent, [source])
    if kind is None or not stat.S_ISDIR(kind):
        if os.path.lexists(source):
            raise BadValue(f"input={source} is neither a file nor a folder (a device, a "
                           "FIFO or a broken link): pass an image or a folder of them")
        raise MissingPath(f"input {source} not found: pass an image or a folder of them")
    inputs = Inputs(source)
    scan(source, inputs, recursive, exclude.resolve() if exclude is not None else None)
    if not inputs.files:
        note = inputs.note()
        raise MissingPath(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source}"
                          + (f" ({note})" if note else ""))
    return inputs


def scan(folder: Path, inputs: Inputs, recursive: bool, exclude: Path | None) -> None:
    """Add the images of ``folder`` to ``inputs``, and count what is skipped. A file with an
    image's suffix is taken whatever it is (a FIFO, a device): the reader names it."""
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            if exclude is not None and entry.resolve() == exclude:
                continue  # the output folder: seg's own masks
            if not recursive:
                inputs.subfolders += 1
            elif entry.is_symlink():
                inputs.folder_links += 1
            else:
                scan(entry, inputs, recursive, exclude)
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            inputs.files.append(entry)
        else:
            inputs.others[entry.suffix.lower() or "no suffix"] += 1


class Predictor:
    """A checkpoint's model (which normalises its input) and colours, applied to uint8 RGB
    images."""

    def __init__(self, state: dict, device: torch.device, inference: Inference) -> None:
        self.model = model_from_checkpoint(state).to(device).eval()
        self.device = device
        self.inference = inference
        self.palette = np.array(state["palette"], dtype=np.uint8)[:len(state["class_names"])]
        self.class_names = [str(name) for name in state["class_names"]]

    @torch.no_grad()
    def labels(self, images: list[np.ndarray]) -> np.ndarray:
        """Class indices ``(B, H, W)`` for same-sized ``(H, W, 3)`` uint8 RGB images."""
        batch = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2)
        # seen whole, in windows or at scales; pixel values as decoded, the model normalises
        batch = batch.float()  # (B, 3, H, W)
        return self.inference(self.model, batch).max(1).indices.to(torch.uint8).cpu().numpy()

    def encode(self, labels: np.ndarray, image: np.ndarray, alpha: float) -> dict[str, bytes]:
        """The files of one image, by :data:`OUTPUT_SUFFIXES`: a palette PNG (so that any
        viewer shows the classes in the checkpoint's colours) and a JPEG overlay (``alpha``
        of each object class's colour over the image, outlined, the background untouched,
        with a legend below). Encoded in memory, so that a write is one atomic step."""
        index = Image.fromarray(labels, mode="P")
        flat = self.palette.reshape(-1).tolist()
        index.putpalette(flat + [0] * (768 - len(flat)))
        png = io.BytesIO()
        index.save(png, format="PNG")
        overlay = overlay_with_legend(image, labels, self.palette, self.class_names, alpha)
        encoded, jpeg = cv2.imencode(".jpg", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        if not encoded:
            raise RuntimeError("OpenCV could not encode an overlay as JPEG")
        return dict(zip(OUTPUT_SUFFIXES, (png.getvalue(), jpeg.tobytes()), strict=True))


def output_names(inputs: Inputs) -> dict[Path, str]:
    """The name each image's outputs get, relative to the output folder: its path under
    the input folder without the suffix, or ``<stem>_<suffix>`` where two inputs of one
    folder share a stem (``x.jpg`` and ``x.png`` give ``x_jpg`` and ``x_png``)."""
    relative = {path: path.relative_to(inputs.root) for path in inputs.files}
    counts = Counter(name.with_suffix("") for name in relative.values())
    names = {path: str(name.with_suffix("")) if counts[name.with_suffix("")] == 1
             else f"{name.with_suffix('')}_{name.suffix[1:]}" for path, name in relative.items()}
    taken: dict[str, Path] = {}
    for path, name in names.items():
        if name in taken:
            raise BadValue(f"{taken[name]} and {path} would both write {name}.png: rename "
                           "one of them")
        taken[name] = path
    return names


def refuse_long_names(names: dict[Path, str]) -> list[str]:
    """Take out of ``names`` each image whose output name would be longer than a file
    system takes (NAME_MAX bytes, with the longest suffix ``_overlay.jpg``); return their
    problems. Refused rather than cut: a cut name would need a hash to stay apart from the
    others, and no longer tell which image it came from."""
    room = NAME_MAX - max(len(os.fsencode(suffix)) for suffix in OUTPUT_SUFFIXES)
    problems = []
    for path, name in list(names.items()):
        length = len(os.fsencode(Path(name).name))
        if length > room:
            del names[path]
            problems.append(f"{printable(path)}: its outputs' names would be longer than "
                            f"{NAME_MAX} bytes, more than a file system takes; rename the "
                            f"image to at most {room} bytes before its suffix")
    return problems


def check_mask_outputs(output: Path, files: list[Path], names: Iterable[str], overwrite: bool
                 ) -> None:
    """Outputs never replace an input, nor (unless ``overwrite``) an earlier result, nor
    anything but a plain file (no link, folder, device or hard link); subfolders of the
    output are real folders, never links."""
    if output.exists() and not output.is_dir():
        raise NotAFolder(f"output={output} is a file: pass a folder for the masks")
    names = list(names)
    held = {path.resolve().parent for path in files}
    for folder in sorted({output / Path(name).parent for name in names}):
        check_real_folders(output, folder)
        if folder.resolve() in held:
            raise BadValue(f"output={output} holds the input images: write the masks to "
                           "another folder (outputs never replace inputs)")
    inputs = identities(files)
    for name in names:
        for suffix in OUTPUT_SUFFIXES:
            check_target(output / f"{name}{suffix}", output, inputs, overwrite)


def identities(files: list[Path]) -> dict[tuple[int, int], Path]:
    """Each input by (device, inode): what a link or a hard link to it also has."""
    found = {}
    for path in files:
        try:
            status = os.stat(path)
        except OSError:
            continue  # the reader names it
        found[status.st_dev, status.st_ino] = path
    return found


def check_target(path: Path, output: Path, inputs: dict[tuple[int, int], Path],
                 overwrite: bool) -> None:
    """``path`` may be written: it is not an input under another name, and it is new or
    (with ``overwrite``) a plain file."""
    try:
        status = os.stat(path)  # through a link: where a write would land, were it followed
    except OSError:
        status = None  # absent, or a broken link (refused below)
    if status is not None and (status.st_dev, status.st_ino) in inputs:
        raise PathExists(f"{path} is the input {inputs[status.st_dev, status.st_ino]} (a "
                         "link or a hard link to it): remove it, or choose another output folder")
    if not overwrite and os.path.lexists(path):
        raise BadValue(f"output={output} already holds {path.relative_to(output)} of an "
                       "earlier run: choose a new folder, or overwrite=true to replace them")
    refuse_unless_replaceable(path, replace=True)


def check_real_folders(output: Path, folder: Path) -> None:
    """Each existing folder from ``output`` down to ``folder`` is a real folder: a write
    through a link there would land wherever it points (an input folder, say)."""
    path = output
    for part in folder.relative_to(output).parts:
        path = path / part
        if not os.path.lexists(path):
            return
        if path.is_symlink() or not path.is_dir():
            raise PathExists(f"{path} is a link or a file, not a folder: seg writes masks "
                             f"only into real folders; remove it or choose another output")


def make_folders(output: Path, names: Iterable[str]) -> None:
    """Create ``output`` and the subfolders ``names`` need; one that cannot be made is one
    line of error, and each is checked again once made (it may have changed since)."""
    for folder in sorted({output / Path(name).parent for name in names}):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise BadValue(f"cannot create output={folder} ({error.strerror}): choose a "
                           "folder you can write to") from None
        check_real_folders(output, folder)


def same_size_batches(files: list[Path], batch_size: int, failed: list[str],
                      max_pixels: int = MAX_IMAGE_PIXELS
                      ) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """Decoded images in batches of one size, holding at most ``batch_size`` images and
    ``max_pixels`` pixels a batch: the model's memory grows with the pixels it is given
    at once, so an image over ``max_pixels`` is refused from its header and a batch goes
    as soon as another image of its size would pass it. When ``batch_size`` images are
    held, the largest group of one size goes (the oldest of equal ones), so images of all
    different sizes go one by one. Unreadable images go to ``failed``."""
    waiting: dict[tuple[int, int], list[tuple[Path, np.ndarray]]] = {}
    held = 0
    for path in files:
        image = read_or_fail(path, max_pixels, failed)
        if image is None:
            continue
        size = image.shape[:2]
        group = waiting.setdefault(size, [])
        group.append((path, image))
        held += 1
        if len(group) == batch_size or (len(group) + 1) * size[0] * size[1] > max_pixels:
            held -= len(group)
            yield waiting.pop(size)
        elif held == batch_size:
            largest = max(waiting, key=lambda shape: len(waiting[shape]))  # first of equals
            held -= len(waiting[largest])
            yield waiting.pop(largest)
    yield from waiting.values()


def read_or_fail(path: Path, max_pixels: int, failed: list[str]) -> np.ndarray | None:
    """The image at ``path``, or None with its problem (escaped: a file's name may hold
    terminal escapes) added to ``failed``."""
    try:
        return read_image(path, max_pixels=max_pixels)
    except SampleError as error:
        failed.append(printable(error))
    except MemoryError:
        failed.append(out_of_memory_problem(path, "decoding it"))
    return None


def out_of_memory_problem(path: Path, doing: str) -> str:
    return (f"{printable(path)}: out of memory {doing}: use a smaller image, a lower "
            "max_image_pixels to skip such images, batch_size=1, or a machine with more "
            "memory")


def predict_files(predictor: Predictor, files: list[Path], names: dict[Path, str],
                  output: Path, batch_size: int, alpha: float,
                  max_pixels: int = MAX_IMAGE_PIXELS, progress: bool = False,
                  replace: bool = False) -> list[str]:
    """Write the mask and overlay of each of ``files`` into ``output`` under its name in
    ``names``, each batch as soon as it is through the model; ``replace`` lets them replace
    plain files there. Return the problems of the images that could not be read (skipped)."""
    failed: list[str] = []
    with tqdm(total=len(files), desc="predict", disable=not progress) as bar:
        for batch in same_size_batches(files, batch_size, failed, max_pixels):
            for path, image, label in labelled(predictor, batch, failed):
                encoded = encoded_or_fail(predictor, path, image, label, alpha, failed)
                for suffix, data in (encoded or {}).items():
                    write_file(output / f"{names[path]}{suffix}", data, replace)
            bar.update(len(batch))
    return failed


def labelled(predictor: Predictor, batch: list[tuple[Path, np.ndarray]], failed: list[str]
             ) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """Each image of ``batch`` with its class indices; when memory runs out, none, and
    each image's problem in ``failed`` (the next batch may still fit)."""
    try:
        labels = predictor.labels([image for _, image in batch])
    except (MemoryError, RuntimeError) as error:
        if not out_of_memory(error):
            raise
        failed += [out_of_memory_problem(path, f"segmenting it ({image.shape[1]}x"
                                               f"{image.shape[0]}, {len(batch)} in the batch)")
                   for path, image in batch]
        return []
    return [(path, image, label) for (path, image), label in zip(batch, labels, strict=True)]


def encoded_or_fail(predictor: Predictor, path: Path, image: np.ndarray, labels: np.ndarray,
                    alpha: float, failed: list[str]) -> dict[str, bytes] | None:
    """The image's output files, or None when memory ran out (its problem in ``failed``)."""
    try:
        return predictor.encode(labels, image, alpha)
    except (MemoryError, RuntimeError) as error:
        if not out_of_memory(error):
            raise
        failed.append(out_of_memory_problem(path, "drawing its overlay"))
        return None
