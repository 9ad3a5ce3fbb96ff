"""Procedural generator for the embedded "shapes" segmentation dataset (PASCAL VOC layout).

Every image is a textured, noisy background with 7-12 objects on top. Objects and
backgrounds draw their colours from the *same* distribution, so a per-pixel colour
classifier cannot solve the task; only shape, texture and boundaries separate the classes.
Thin lines (2-4 px wide), tiny dots (4-8 px across) and hollow rings make boundary
precision and small objects matter.

Each image ``i`` of a split gets its own ``numpy.random.Generator`` seeded from
``(seed, split, i)``, so output is byte-identical for a given seed and the train and val
images do not depend on each other's counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from seg.data.synthetic.procedural import write_voc_dataset

SHAPES_CLASSES: tuple[str, ...] = (
    "background",
    "disk",
    "rectangle",
    "triangle",
    "ring",
    "line",
    "dot",
    "cross",
)

DISK, RECTANGLE, TRIANGLE, RING, LINE, DOT, CROSS = range(1, 8)
_THIN_CLASSES = (LINE,)  # every image gets one
# Geometry below is specified in pixels for this image size and scaled for other sizes.
_REFERENCE_SIZE = 192
_MIN_CONTRAST = 70.0  # RGB distance between object mean and nearby background mean

Point = tuple[float, float]


# --------------------------------------------------------------------------- textures


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    # Stay away from 0/255 so that texture and noise are not flattened by clipping.
    return rng.uniform(25.0, 230.0, size=3).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Zero-mean colour noise with features about ``cell`` pixels wide, shape (H, W, 3)."""
    gh, gw = height // cell + 3, width // cell + 3
    grid = rng.standard_normal((gh, gw, 4)).astype(np.float32)
    # Partly shared across channels: real textures vary more in brightness than in hue.
    grid = 0.8 * grid[..., 3:] + 0.6 * grid[..., :3]
    up = cv2.resize(grid, (gw * cell, gh * cell), interpolation=cv2.INTER_CUBIC)
    oy, ox = rng.integers(0, cell, size=2)  # random phase so lattices don't line up
    return up[oy : oy + height, ox : ox + width]


def _surface(
    rng: np.random.Generator, height: int, width: int, scale: float, texture: float = 1.0
) -> np.ndarray:
    """A random textured colour field, shape (height, width, 3) float32.

    Used for backgrounds *and* object fills so both share one distribution: a base colour,
    multi-scale smoothed noise, a low-frequency linear gradient and, sometimes, stripes.
    ``scale`` is the image size relative to the reference size; texture scales with it.
    """
    out = np.empty((height, width, 3), dtype=np.float32)
    out[:] = _random_colour(rng)
    for cell in (2, 5, 12, 32):
        if rng.random() < 0.75:
            noise = _smooth_noise(rng, height, width, max(1, round(cell * scale)))
            out += texture * rng.uniform(2.0, 14.0) * noise

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    # A ramp across a whole image spans about [-1.4, 1.4]; object fills see a part of it.
    ramp = (xx * math.cos(angle) + yy * math.sin(angle)) / (_REFERENCE_SIZE * scale)
    out += ramp[..., None] * rng.uniform(-35.0, 35.0, size=3).astype(np.float32)

    if rng.random() < 0.3 * texture:
        angle = rng.uniform(0.0, math.pi)
        period = rng.uniform(4.0, 16.0)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) * (2.0 * math.pi / period)
        wave = np.sin(phase + rng.uniform(0.0, 2.0 * math.pi))
        out += wave[..., None] * rng.uniform(-22.0, 22.0, size=3).astype(np.float32)
    return out


# --------------------------------------------------------------------------- geometry


def _rotated_rect(cx: float, cy: float, w: float, h: float, angle: float) -> list[Point]:
    c, s = math.cos(angle), math.sin(angle)
    corners = ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners]


def _centre(rng: np.random.Generator, size: int) -> tuple[float, float]:
    # Centres may sit near the border so objects are sometimes cut by the frame.
    cx, cy = rng.uniform(0.05 * size, 0.95 * size, size=2)
    return float(cx), float(cy)


def _draw_disk(d: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, k: float) -> None:
    cx, cy = _centre(rng, size)
    r = max(3.0, rng.uniform(10.0, 30.0) * k)
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)


def _draw_rectangle(d: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, k: float) -> None:
    cx, cy = _centre(rng, size)
    w, h = (max(5.0, v * k) for v in rng.uniform(14.0, 60.0, size=2))
    # Half of the rectangles stay axis-aligned, the others get an arbitrary rotation.
    angle = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, math.pi)
    d.polygon(_rotated_rect(cx, cy, w, h, angle), fill=1)


def _draw_triangle(d: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, k: float) -> None:
    cx, cy = _centre(rng, size)
    start = rng.uniform(0.0, 2.0 * math.pi)
    # Jittered, roughly even vertex angles keep triangles from degenerating into slivers.
    angles = start + np.array([0.0, 2.0, 4.0]) * math.pi / 3 + rng.uniform(-0.4, 0.4, size=3)
    radii = np.maximum(4.0, rng.uniform(14.0, 36.0, size=3) * k)
    pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in zip(radii, angles, strict=True)]
    d.polygon(pts, fill=1)


def _draw_ring(d: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, k: float) -> None:
    cx, cy = _centre(rng, size)
    # An annulus: hollow, so only its hole tells it from a disk (lines are the thin class).
    stroke = int(rng.integers(5, 9))
    r = max(stroke + 4.0, rng.uniform(12.0, 32.0) * k)
    d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, width=stroke)


def _draw_line(d: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, k: float) -> None:
    cx, cy = _centre(rng, size)
    stroke = int(rng.integers(2, 5))
    half = max(8.0, rng.uniform(30.0, 120.0) * k) / 2
    angle = rng.uniform(0.0, math.pi)
    dx, dy = half * math.cos(angle), half * math.sin(angle)
    d.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=1, width=stroke)


def _draw_dots(d: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, k: float) -> None:
    # One "dot" object is a small group of tiny disks sharing a fill.
    for _ in range(int(rng.integers(2, 7))):
        cx, cy = _centre(rng, size)
        r = float(rng.uniform(2.0, 4.0))
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)


def _draw_cross(d: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, k: float) -> None:
    cx, cy = _centre(rng, size)
    length = max(10.0, rng.uniform(24.0, 64.0) * k)
    # Bars at least 5 px thick so a cross is never confused with a pair of lines.
    thick = max(5.0, rng.uniform(6.0, 12.0) * k)
    angle = rng.uniform(0.0, math.pi / 2)
    d.polygon(_rotated_rect(cx, cy, length, thick, angle), fill=1)
    d.polygon(_rotated_rect(cx, cy, length, thick, angle + math.pi / 2), fill=1)


_DRAWERS: dict[int, Callable[[ImageDraw.ImageDraw, np.random.Generator, int, float], None]] = {
    DISK: _draw_disk,
    RECTANGLE: _draw_rectangle,
    TRIANGLE: _draw_triangle,
    RING: _draw_ring,
    LINE: _draw_line,
    DOT: _draw_dots,
    CROSS: _draw_cross,
}


def _object_mask(cls: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """Boolean (size, size) mask of one object of class ``cls``."""
    canvas = Image.new("L", (size, size), 0)
    _DRAWERS[cls](ImageDraw.Draw(canvas), rng, size, size / _REFERENCE_SIZE)
    return np.asarray(canvas, dtype=bool)


# --------------------------------------------------------------------------- composition


_RING_KERNEL = np.ones((9, 9), dtype=np.uint8)
_MARGIN_KERNEL = np.ones((5, 5), dtype=np.uint8)
_PLACEMENT_TRIES = 8


def _bbox(mask: np.ndarray) -> tuple[slice, slice]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _paint_object(
    image: np.ndarray, obj: np.ndarray, rng: np.random.Generator, scale: float
) -> None:
    """Paint a fresh textured fill into ``image`` where ``obj`` is set.

    The fill is shifted if needed so that its mean colour differs from the mean of the
    pixels just around the object by at least ``_MIN_CONTRAST``: objects stay visible,
    but only modestly, and colour alone does not identify them.
    """
    box = _bbox(obj)
    inside = obj[box]
    # Textures are only synthesised over the bounding box, which keeps generation fast.
    # Fills are less textured than backgrounds: texture, not colour, tells them apart.
    fill = _surface(rng, inside.shape[0], inside.shape[1], scale, texture=0.4)[inside]
    around = cv2.dilate(obj.view(np.uint8), _RING_KERNEL).astype(bool) & ~obj
    if around.any():
        context = image[around].mean(axis=0)
        diff = fill.mean(axis=0) - context
        dist = float(np.linalg.norm(diff))
        if dist < _MIN_CONTRAST:
            direction = diff if dist > 1e-3 else rng.standard_normal(3).astype(np.float32)
            direction = direction / np.linalg.norm(direction)
            fill += (context + _MIN_CONTRAST * direction - fill.mean(axis=0)).astype(np.float32)
    image[box][inside] = fill


def _object_classes(rng: np.random.Generator) -> list[int]:
    # Every image gets at least one thin stroke and one group of dots, so the hard
    # (thin / small) classes are present almost everywhere; the rest is uniform.
    count = int(rng.integers(7, 13))
    classes = [int(rng.choice(_THIN_CLASSES)), DOT]
    classes += [int(c) for c in rng.integers(1, len(SHAPES_CLASSES), size=count - 2)]
    rng.shuffle(classes)
    return classes


def render_shapes_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one sample: an RGB uint8 image (size, size, 3) and a class-index mask (size, size).

    Objects mostly keep apart (a few placements are tried), so that each keeps its shape;
    when no free place is found the object is painted over the others, occluding them.
    """
    scale = size / _REFERENCE_SIZE
    image = _surface(rng, size, size, scale)
    mask = np.zeros((size, size), dtype=np.uint8)
    taken = np.zeros((size, size), dtype=np.uint8)  # objects plus a small margin
    for cls in _object_classes(rng):
        for _ in range(_PLACEMENT_TRIES):
            obj = _object_mask(cls, rng, size)
            if obj.any() and not taken[obj].any():
                break
        if not obj.any():
            continue
        taken |= cv2.dilate(obj.view(np.uint8), _MARGIN_KERNEL)
        _paint_object(image, obj, rng, scale)
        mask[obj] = cls
    image += rng.normal(0.0, rng.uniform(2.0, 8.0), size=image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), mask


# --------------------------------------------------------------------------- files


def generate_shapes(
    root: str | Path,
    num_train: int = 800,
    num_val: int = 100,
    image_size: int = 192,
    seed: int = 0,
) -> Path:
    """Generate the "shapes" dataset under ``root`` (mask values index ``SHAPES_CLASSES``);
    see :func:`seg.data.synthetic.procedural.write_voc_dataset` for the layout."""
    return write_voc_dataset(root, render_shapes_sample, num_train, num_val, image_size, seed)
