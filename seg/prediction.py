"""Predicting folders of images: same-size images batched together, and each image's mask
and overlay written without replacing an input or (unless asked) an earlier result."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from seg.data.base import MAX_IMAGE_PIXELS, SampleError, read_image
from seg.data.folder import IMAGE_SUFFIXES
from seg.errors import BadValue, MissingPath, NotAFolder
from seg.inference import Inference
from seg.stored import model_from_checkpoint
from seg.visualize import overlay_with_legend


def image_files(source: str | Path) -> list[Path]:
    """``source`` itself, or the images in the folder ``source``, sorted by name."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise MissingPath(f"input {source} not found: pass an image or a folder of them")
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MissingPath(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source}")
    return files


class Predictor:
    """A checkpoint's model, normalisation and colours, applied to uint8 RGB images."""

    def __init__(self, state: dict, device: torch.device, inference: Inference) -> None:
        self.model = model_from_checkpoint(state).to(device).eval()
        self.device = device
        self.inference = inference
        self.mean = torch.tensor(state["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(state["std"], device=device).view(1, 3, 1, 1)
        self.palette = np.array(state["palette"], dtype=np.uint8)[:len(state["class_names"])]
        self.class_names = [str(name) for name in state["class_names"]]

    @torch.no_grad()
    def labels(self, images: list[np.ndarray]) -> np.ndarray:
        """Class indices ``(B, H, W)`` for same-sized ``(H, W, 3)`` uint8 RGB images."""
        batch = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2)
        batch = (batch.float() / 255.0 - self.mean) / self.std
        return self.inference(self.model, batch).argmax(1).to(torch.uint8).cpu().numpy()

    def write(self, labels: np.ndarray, image: np.ndarray, stem: str, output: Path,
              alpha: float) -> None:
        """``<stem>.png`` (a palette PNG, so that any viewer shows the classes in the
        checkpoint's colours) and ``<stem>_overlay.jpg`` (``alpha`` of each object class's
        colour over the image, outlined, the background untouched, with a legend below)."""
        index = Image.fromarray(labels, mode="P")
        flat = self.palette.reshape(-1).tolist()
        index.putpalette(flat + [0] * (768 - len(flat)))
        overlay = overlay_with_legend(image, labels, self.palette, self.class_names, alpha)
        overlay_bgr = cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)
        write_or_fail(output / f"{stem}.png", lambda path: index.save(path))
        write_or_fail(output / f"{stem}_overlay.jpg",
                      lambda path: cv2.imwrite(str(path), overlay_bgr))


def write_or_fail(path: Path, write: Callable[[Path], object]) -> None:
    """Run ``write(path)``; a failed write (an error, or False from OpenCV) is an error."""
    try:
        written = write(path)
    except (OSError, cv2.error) as error:
        raise BadValue(f"cannot write {path} ({error}): check the output folder's free "
                       "space and permissions") from None
    if written is False:
        raise BadValue(f"cannot write {path}: check the output folder's free space and "
                       "permissions")


def output_stems(files: list[Path]) -> dict[Path, str]:
    """The name each image's outputs get: its stem, or ``<stem>_<suffix>`` where two
    inputs share a stem (``x.jpg`` and ``x.png`` give ``x_jpg`` and ``x_png``)."""
    counts = Counter(path.stem for path in files)
    stems = {path: path.stem if counts[path.stem] == 1 else f"{path.stem}_{path.suffix[1:]}"
             for path in files}
    taken: dict[str, Path] = {}
    for path, stem in stems.items():
        if stem in taken:
            raise BadValue(f"{taken[stem]} and {path} would both write {stem}.png: rename "
                           "one of them")
        taken[stem] = path
    return stems


def check_output(output: Path, files: list[Path], stems: Iterable[str], overwrite: bool
                 ) -> None:
    """Outputs never replace an input, nor (unless ``overwrite``) an earlier result."""
    if output.exists() and not output.is_dir():
        raise NotAFolder(f"output={output} is a file: pass a folder for the masks")
    target = output.resolve()
    if any(path.resolve().parent == target for path in files):
        raise BadValue(f"output={output} holds the input images: write the masks to "
                       "another folder (outputs never replace inputs)")
    if overwrite or not output.is_dir():
        return
    for stem in stems:
        for name in (f"{stem}.png", f"{stem}_overlay.jpg"):
            if (output / name).exists():
                raise BadValue(f"output={output} already holds {name} of an earlier run: "
                               "choose a new folder, or overwrite=true to replace them")


def make_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents); one that cannot be made is one line of error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadValue(f"cannot create output={folder} ({error.strerror}): choose a "
                       "folder you can write to") from None


def same_size_batches(files: list[Path], batch_size: int, failed: list[str],
                      max_pixels: int = MAX_IMAGE_PIXELS
                      ) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """Decoded images in batches of one size; unreadable ones go to ``failed``."""
    waiting: dict[tuple[int, int], list[tuple[Path, np.ndarray]]] = defaultdict(list)
    for path in files:
        try:
            image = read_image(path, max_pixels=max_pixels)
        except SampleError as error:
            failed.append(str(error))
            continue
        group = waiting[image.shape[:2]]
        group.append((path, image))
        if len(group) == batch_size:
            yield waiting.pop(image.shape[:2])
    yield from waiting.values()


def predict_files(predictor: Predictor, files: list[Path], stems: dict[Path, str],
                  output: Path, batch_size: int, alpha: float,
                  max_pixels: int = MAX_IMAGE_PIXELS, progress: bool = False) -> list[str]:
    """Write the mask and overlay of each of ``files`` into ``output`` under its name in
    ``stems``; return the problems of the images that could not be read (skipped)."""
    failed: list[str] = []
    with tqdm(total=len(files), desc="predict", disable=not progress) as bar:
        for batch in same_size_batches(files, batch_size, failed, max_pixels):
            labels = predictor.labels([image for _, image in batch])
            for (path, image), label in zip(batch, labels, strict=True):
                predictor.write(label, image, stems[path], output, alpha)
            bar.update(len(batch))
    return failed
