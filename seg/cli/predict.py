"""``seg-predict checkpoint=PATH input=FILE_OR_DIR output=DIR``: segment images with a
trained model.

For each image, ``<stem>.png`` (class indices as a palette PNG of the input's size, in the
checkpoint's colours) and ``<stem>_overlay.jpg`` (the colours blended over the image).
The checkpoint carries the classes, colours, normalisation and model config, so no
dataset config is needed. An unreadable image is reported and skipped; the exit status
is then 1.
"""

from __future__ import annotations

import logging
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import cv2
import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from seg.cli.common import CONFIG_DIR, exit_on_user_error, model_from_checkpoint
from seg.data.base import SampleError, read_image
from seg.data.folder import IMAGE_SUFFIXES
from seg.engine import load_checkpoint, resolve_device
from seg.inference import Inference

log = logging.getLogger("seg.predict")


def image_files(source: str | Path) -> list[Path]:
    """``source`` itself, or the images in the folder ``source``, sorted by name."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"input {source} not found: pass an image or a folder of them")
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source}")
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

    @torch.no_grad()
    def labels(self, images: list[np.ndarray]) -> np.ndarray:
        """Class indices ``(B, H, W)`` for same-sized ``(H, W, 3)`` uint8 RGB images."""
        batch = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2)
        batch = (batch.float() / 255.0 - self.mean) / self.std
        return self.inference(self.model, batch).argmax(1).to(torch.uint8).cpu().numpy()

    def write(self, labels: np.ndarray, image: np.ndarray, stem: str, output: Path,
              alpha: float) -> None:
        index = Image.fromarray(labels, mode="P")
        flat = self.palette.reshape(-1).tolist()
        index.putpalette(flat + [0] * (768 - len(flat)))
        index.save(output / f"{stem}.png")
        colours = self.palette[np.minimum(labels, len(self.palette) - 1)]
        overlay = (image * (1 - alpha) + colours * alpha).round().astype(np.uint8)
        cv2.imwrite(str(output / f"{stem}_overlay.jpg"), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))


def same_size_batches(files: list[Path], batch_size: int, failed: list[str]
                      ) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """Decoded images in batches of one size; unreadable ones go to ``failed``."""
    waiting: dict[tuple[int, int], list[tuple[Path, np.ndarray]]] = defaultdict(list)
    for path in files:
        try:
            image = read_image(path)
        except SampleError as error:
            failed.append(str(error))
            continue
        group = waiting[image.shape[:2]]
        group.append((path, image))
        if len(group) == batch_size:
            yield waiting.pop(image.shape[:2])
    yield from waiting.values()


def predict(cfg: DictConfig) -> list[str]:
    """Segment every image of ``cfg.input`` into ``cfg.output``; return the failures."""
    files = image_files(cfg.input)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(load_checkpoint(cfg.checkpoint), resolve_device(cfg.device),
                          instantiate(cfg.inference))
    failed: list[str] = []
    with tqdm(total=len(files), desc="predict", disable=not cfg.progress) as bar:
        for batch in same_size_batches(files, cfg.batch_size, failed):
            labels = predictor.labels([image for _, image in batch])
            for (path, image), label in zip(batch, labels, strict=True):
                predictor.write(label, image, path.stem, output, cfg.overlay_alpha)
            bar.update(len(batch))
    for problem in failed:
        print(f"skipped {problem}", file=sys.stderr)
    print(f"{len(files) - len(failed)} of {len(files)} images segmented into {output}")
    return failed


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    if predict(cfg):
        sys.exit(1)  # some images could not be read; the others are written


if __name__ == "__main__":
    main()
