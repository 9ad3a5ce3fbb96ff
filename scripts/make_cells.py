"""Generate "cells", a folder dataset of the kind a user brings (seg's folder layout:
images/, masks/, classes.yaml, splits/): microscope-like 128 px images of round cells,
their darker nuclei and 1-2 px fibres over a textured, unevenly lit background. It is
neither shapes nor scenes: the study's presets are measured on it as on data they were
not sized for (compare=mydata).

    python scripts/make_cells.py --out data/cells [--train 600] [--val 150] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from seg.files import write_file, write_text

CLASSES = ("background", "cell", "nucleus", "fibre")
SIZE = 128


def smooth_field(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Random values on a coarse grid, upsampled smoothly: blobs of about SIZE/cells."""
    coarse = rng.random((cells, cells), dtype=np.float32)
    return cv2.resize(coarse, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)


def draw_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One image (RGB uint8) and its mask (class indices)."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    for _ in range(rng.integers(2, 7)):  # cells, each with a nucleus off its centre
        centre = rng.integers(12, SIZE - 12, 2)
        axes = rng.integers(7, 17, 2)
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(mask, tuple(map(int, centre)), tuple(map(int, axes)), angle, 0, 360, 1, -1)
        offset = rng.integers(-3, 4, 2)
        nucleus = tuple(int(a * rng.uniform(0.3, 0.5)) for a in axes)
        cv2.ellipse(mask, tuple(map(int, centre + offset)), nucleus, angle, 0, 360, 2, -1)
    for _ in range(rng.integers(1, 4)):  # fibres: thin curves across the field
        points = rng.integers(0, SIZE, (4, 2)).astype(np.int32)
        cv2.polylines(mask, [points], False, 3, thickness=int(rng.integers(1, 3)))
    light = 0.7 + 0.5 * smooth_field(rng, 3)  # uneven illumination
    texture = 25 * (smooth_field(rng, 24) - 0.5)
    tone = np.array([[200, 190, 205], [150, 120, 170], [90, 60, 120], [120, 110, 80]],
                    np.float32) + rng.normal(0, 12, (4, 3))  # each slide's own stain
    image = tone[mask] * light[..., None] + texture[..., None]
    image += rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_split(root: Path, split: str, count: int, rng: np.random.Generator,
                first: int) -> None:
    stems = []
    for index in range(first, first + count):
        image, mask = draw_sample(rng)
        stem = f"cell_{index:05d}"
        write_file(root / "images" / f"{stem}.png",
                   cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes())
        write_file(root / "masks" / f"{stem}.png", cv2.imencode(".png", mask)[1].tobytes())
        stems.append(stem)
    write_text(root / "splits" / f"{split}.txt", "\n".join(stems) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the dataset's folder (new)")
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--val", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists: choose a new folder (nothing is overwritten)")
    for folder in ("images", "masks", "splits"):
        (args.out / folder).mkdir(parents=True)
    colours = ([0, 0, 0], [0, 200, 0], [200, 0, 200], [230, 180, 0])
    listed = zip(CLASSES, colours, strict=True)
    write_text(args.out / "classes.yaml", "classes:\n" + "".join(
        f"  - {{name: {name}, color: {colour}}}\n" for name, colour in listed))
    rng = np.random.default_rng(args.seed)
    write_split(args.out, "train", args.train, rng, 0)
    write_split(args.out, "val", args.val, rng, args.train)
    print(f"wrote {args.train} train and {args.val} val images of {SIZE} px to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
