"""Procedural generator for the embedded "scenes" segmentation dataset (PASCAL VOC layout).

A second synthetic dataset, built to differ from "shapes" wherever an upsampler could
care, so that a comparison of upsamplers is not a verdict on one dataset:

* **texture**: backgrounds and object fills are 1/f ("pink") noise, whose power spectrum
  falls like that of natural images, under a smooth illumination field, soft cast
  shadows, a slight lens blur and sensor noise;
* **occlusion**: objects overlap freely and are painted back to front, so the masks hold
  partly hidden objects and their depth order;
* **scale**: sizes are log-uniform, from specks 3-6 px across to blobs half the image wide;
* **thin structures**: three of the six object classes are 1-3 px wide (smooth wires,
  branching cracks, thin hoops), so boundary precision drives the mean IoU.

Colours of objects and backgrounds come from the same distribution: only geometry
(smooth vs straight outlines, closed vs open curves, branching) and context tell the
classes apart. Each image ``i`` of a split gets its own ``numpy.random.Generator`` seeded
from ``(seed, split, i)``, so output is byte-identical for a given seed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import scipy.fft

from seg.data.synthetic.procedural import write_voc_dataset

SCENES_CLASSES: tuple[str, ...] = (
    "background",
    "blob",  # smooth irregular outline, 12-96 px across
    "slab",  # straight-edged polygon with corners, 12-96 px across
    "speck",  # clusters of tiny dots, 3-6 px across
    "wire",  # smooth open curve, 1-3 px wide
    "crack",  # jagged branching path, 1-3 px wide
    "hoop",  # thin closed ellipse outline, 1-3 px wide
)

BLOB, SLAB, SPECK, WIRE, CRACK, HOOP = range(1, 7)
THIN_CLASSES = (WIRE, CRACK, HOOP)
_SMALL_CLASSES = (SPECK, *THIN_CLASSES)  # a few px across: flat, high-contrast fills
# In every image, twice for most: the small classes need pixels enough to be learnt.
_REQUIRED = (SPECK, SPECK, WIRE, WIRE, CRACK, HOOP, HOOP)
# Extra objects: mostly the large ones, which occlude and give the scene its layout.
_EXTRA_WEIGHTS = np.array([0.25, 0.25, 0.1, 0.14, 0.13, 0.13])
# Geometry is specified in pixels for this image size and scaled for other sizes.
_REFERENCE_SIZE = 192
_SHIFT = 4  # cv2 drawing with 4 fractional bits: sub-pixel positions, less aliasing
_ONE = 1 << _SHIFT
_MIN_CONTRAST = 60.0  # RGB distance between an object's mean and its surroundings'
_SMALL_CONTRAST = 85.0  # 1 px strokes and specks lose about half of it to the lens blur

Layer = tuple[int, np.ndarray]  # (class index, boolean (H, W) mask of the whole object)


# --------------------------------------------------------------------------- textures


@functools.lru_cache(maxsize=8)
def _pink_filter(count: int, size: int) -> np.ndarray:
    """Amplitude filters (count, size, size // 2 + 1) for ``rfft2`` spectra: filter ``j``
    gives power 1/f^beta, beta from 1.5 (grainy) to 3 (cloudy); natural images sit near 2."""
    betas = np.linspace(1.5, 3.0, count, dtype=np.float32)[:, None, None]
    freq = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :])
    freq[0, 0] = 1.0  # avoids dividing by 0; the DC term is zeroed just below
    amplitude = freq.astype(np.float32)[None] ** (-betas / 2)
    amplitude[:, 0, 0] = 0.0  # zero mean
    return amplitude


def _pink_noise(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """``count`` pink-noise fields, zero mean, unit std: shape (count, size, size)."""
    white = rng.standard_normal((count, size, size), dtype=np.float32)
    spectrum = scipy.fft.rfft2(white)  # float32 in, complex64 out: twice numpy's speed
    fields = scipy.fft.irfft2(spectrum * _pink_filter(count, size), s=(size, size))
    fields /= fields.std(axis=(1, 2), keepdims=True)
    return fields


def _unit_vector(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3).astype(np.float32)
    return v / np.linalg.norm(v)


def _texture(
    rng: np.random.Generator, bank: np.ndarray, height: int, width: int, rough: float
) -> np.ndarray:
    """A colour texture of shape (height, width, 3) float32 cut from the noise ``bank``
    (count, size, size) of ``_pink_noise``; height and width at most ``size``.

    Brightness varies more than hue, as in real surfaces: one field drives luminance,
    two weaker ones drive chroma. Random fields, windows, colours and amplitudes make
    fills that share a bank look unrelated.
    """
    count, size = bank.shape[0], bank.shape[1]
    oy, ox = rng.integers(0, size - height + 1), rng.integers(0, size - width + 1)
    fields = rng.choice(count, 3, replace=False)
    lum, chroma_a, chroma_b = (bank[f, oy : oy + height, ox : ox + width] for f in fields)
    colour = rng.uniform(30.0, 225.0, size=3).astype(np.float32)
    out = colour + rough * rng.uniform(6.0, 28.0) * lum[..., None]
    chroma = chroma_a[..., None] * _unit_vector(rng) + chroma_b[..., None] * _unit_vector(rng)
    return out + rough * rng.uniform(2.0, 10.0) * chroma


def _illumination(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth multiplicative light field, shape (size, size, 1), within 0.5 to 1.5.

    It crosses object boundaries, so absolute brightness says little about the class.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # both in [0, 1)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    ramp = (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle)
    sy, sx = rng.uniform(0.0, 1.0, size=2)
    spot = np.exp(-((xx - sx) ** 2 + (yy - sy) ** 2) / (2 * rng.uniform(0.1, 0.4) ** 2))
    light = 0.85 + rng.uniform(-0.5, 0.5) * ramp + rng.uniform(0.0, 0.4) * spot
    return np.clip(light, 0.5, 1.5)[..., None]


# --------------------------------------------------------------------------- geometry


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    # Log-uniform sizes: as many objects between 6 and 12 px as between 48 and 96 px.
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _centre(rng: np.random.Generator, size: int) -> np.ndarray:
    # Centres may sit near the border so objects are sometimes cut by the frame.
    return rng.uniform(0.05 * size, 0.95 * size, size=2)


def _fixed(points: np.ndarray) -> np.ndarray:
    """(N, 2) float x, y -> the int32 fixed-point coordinates cv2 draws with ``_SHIFT``."""
    return np.round(points * _ONE).astype(np.int32)


def _outline(rng: np.random.Generator, angles: np.ndarray, radii: np.ndarray,
             size: int) -> np.ndarray:
    """Polygon (N, 2) of a star-shaped outline, squashed and rotated at random."""
    squash = rng.uniform(0.5, 1.0)
    turn = rng.uniform(0.0, 2.0 * math.pi)
    x, y = radii * np.cos(angles), squash * radii * np.sin(angles)
    c, s = math.cos(turn), math.sin(turn)
    return _centre(rng, size) + np.stack([x * c - y * s, x * s + y * c], axis=1)


def _draw_blob(canvas: np.ndarray, rng: np.random.Generator, size: int, k: float) -> None:
    # A smooth closed outline: a circle whose radius is perturbed by low harmonics.
    radius = max(3.0, _log_uniform(rng, 6.0, 48.0) * k)
    angles = np.linspace(0.0, 2.0 * math.pi, 64, endpoint=False)
    wobble = sum(rng.uniform(0.0, 0.35 / j) * np.cos(j * angles + rng.uniform(0.0, 2.0 * math.pi))
                 for j in range(2, 6))
    outline = _outline(rng, angles, radius * (1.0 + wobble), size)
    cv2.fillPoly(canvas, [_fixed(outline)], 1, cv2.LINE_8, _SHIFT)


def _draw_slab(canvas: np.ndarray, rng: np.random.Generator, size: int, k: float) -> None:
    # Straight edges and sharp (sometimes re-entrant) corners: what tells it from a blob.
    radius = max(3.0, _log_uniform(rng, 6.0, 48.0) * k)
    corners = int(rng.integers(3, 6))  # few corners: clearly angular at any size
    gaps = rng.uniform(0.5, 1.5, size=corners)  # uneven, but no vertex pair too close
    angles = np.cumsum(gaps) / gaps.sum() * 2.0 * math.pi
    outline = _outline(rng, angles, radius * rng.uniform(0.55, 1.0, size=corners), size)
    cv2.fillPoly(canvas, [_fixed(outline)], 1, cv2.LINE_8, _SHIFT)


def _draw_specks(canvas: np.ndarray, rng: np.random.Generator, size: int, k: float) -> None:
    # One "speck" object is a loose cluster of tiny dots; dot sizes do not scale with k
    # because their point is to be a few pixels whatever the image size.
    centre = _centre(rng, size)
    spread = _log_uniform(rng, 5.0, 40.0) * k
    for _ in range(int(rng.integers(3, 11))):
        x, y = _fixed(centre + rng.normal(0.0, spread, size=2))
        cv2.circle(canvas, (int(x), int(y)), int(rng.uniform(1.5, 3.0) * _ONE), 1,
                   -1, cv2.LINE_8, _SHIFT)


def _bezier(control: np.ndarray, samples: int) -> np.ndarray:
    """Points (samples, 2) on the cubic Bezier curve with ``control`` points (4, 2)."""
    t = np.linspace(0.0, 1.0, samples)[:, None]
    weights = [(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3]
    return sum(w * p for w, p in zip(weights, control, strict=True))


def _stroke_width(rng: np.random.Generator) -> int:
    # cv2 thickness 1 draws 1 px, thickness 2 about 3 px (measured): 1-3 px strokes.
    return int(rng.choice([1, 2, 2]))


def _draw_wire(canvas: np.ndarray, rng: np.random.Generator, size: int, k: float) -> None:
    # A smooth open curve: a cubic Bezier whose control polygon turns gently.
    length = _log_uniform(rng, 30.0, 200.0) * k
    heading = rng.uniform(0.0, 2.0 * math.pi) + np.cumsum(rng.normal(0.0, 0.9, size=3))
    steps = length / 3 * np.stack([np.cos(heading), np.sin(heading)], axis=1)
    control = np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    control += _centre(rng, size) - control.mean(axis=0)
    points = _bezier(control, samples=max(16, int(length / 3)))
    cv2.polylines(canvas, [_fixed(points)], False, 1, _stroke_width(rng), cv2.LINE_8, _SHIFT)


def _crack_path(rng: np.random.Generator, start: np.ndarray, course: float, steps: int,
                k: float) -> tuple[np.ndarray, list[tuple[np.ndarray, float]]]:
    """A jagged walk (steps + 1, 2) along a slowly drifting ``course``, and the
    (point, course) of the branches that fork off it."""
    points, branches = [start], []
    for _ in range(steps):
        course += rng.normal(0.0, 0.15)
        # Each segment kinks away from the course without turning it: jagged but going
        # somewhere, where a wire turns smoothly.
        heading = course + rng.normal(0.0, 0.6)
        step = rng.uniform(2.0, 5.0) * k
        points.append(points[-1] + step * np.array([math.cos(heading), math.sin(heading)]))
        if rng.random() < 0.08:
            branches.append((points[-1], course + rng.choice([-1, 1]) * rng.uniform(0.4, 1.2)))
    return np.array(points), branches


def _draw_crack(canvas: np.ndarray, rng: np.random.Generator, size: int, k: float) -> None:
    # A trunk with branches, and branches of branches: the fork is the tell-tale.
    steps = int(rng.integers(10, 40))
    walks = [(_centre(rng, size), rng.uniform(0.0, 2.0 * math.pi), steps)]
    width = _stroke_width(rng)
    for depth in range(3):  # the trunk, its branches, half of the branches' branches
        next_walks = []
        for start, course, count in walks:
            points, branches = _crack_path(rng, start, course, count, k)
            cv2.polylines(canvas, [_fixed(points)], False, 1, width, cv2.LINE_8, _SHIFT)
            next_walks += [(p, h, max(3, count // 2)) for p, h in branches]
        walks = next_walks if depth == 0 else [w for w in next_walks if rng.random() < 0.5]
        width = 1  # branches are finer than the trunk (3 px forks would be blobs)


def _draw_hoop(canvas: np.ndarray, rng: np.random.Generator, size: int, k: float) -> None:
    # A thin closed ellipse: it curves steadily and closes, which a wire does not.
    x, y = _fixed(_centre(rng, size))
    major = max(4.0, _log_uniform(rng, 6.0, 60.0) * k)
    axes = (int(major * _ONE), int(major * rng.uniform(0.4, 1.0) * _ONE))
    angle = float(rng.uniform(0.0, 180.0))
    cv2.ellipse(canvas, (int(x), int(y)), axes, angle, 0.0, 360.0, 1, _stroke_width(rng),
                cv2.LINE_8, _SHIFT)


_DRAWERS: dict[int, Callable[[np.ndarray, np.random.Generator, int, float], None]] = {
    BLOB: _draw_blob,
    SLAB: _draw_slab,
    SPECK: _draw_specks,
    WIRE: _draw_wire,
    CRACK: _draw_crack,
    HOOP: _draw_hoop,
}


def _object_mask(cls: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """Boolean (size, size) mask of one whole object of class ``cls``, before occlusion."""
    canvas = np.zeros((size, size), dtype=np.uint8)
    _DRAWERS[cls](canvas, rng, size, size / _REFERENCE_SIZE)
    return canvas.astype(bool)


# --------------------------------------------------------------------------- composition


def _object_classes(rng: np.random.Generator) -> list[int]:
    extra = rng.choice(np.arange(1, len(SCENES_CLASSES)), size=int(rng.integers(2, 8)),
                       p=_EXTRA_WEIGHTS)
    return [*_REQUIRED, *(int(c) for c in extra)]


def scene_layers(rng: np.random.Generator, size: int) -> list[Layer]:
    """The objects of one scene as (class, whole-object mask) pairs, back to front.

    Large objects tend to lie behind small ones, as on a cluttered table, but the order
    is noisy: a blob sometimes hides part of a wire, and any object may hide another.
    """
    layers = [(cls, _object_mask(cls, rng, size)) for cls in _object_classes(rng)]
    layers = [(cls, obj) for cls, obj in layers if obj.any()]
    areas = np.array([obj.sum() for _, obj in layers], dtype=np.float64)
    depth = -np.log(areas) + rng.normal(0.0, 1.5, size=len(layers))  # small = in front
    return [layers[i] for i in np.argsort(depth, kind="stable")]


def label_map(layers: list[Layer], size: int) -> np.ndarray:
    """Class-index mask (size, size) uint8: each pixel shows its front-most object."""
    mask = np.zeros((size, size), dtype=np.uint8)
    for cls, obj in layers:
        mask[obj] = cls
    return mask


def _bbox(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice]:
    """The rows and columns of ``mask``'s set pixels, grown by ``margin`` within the image.

    Per-object work is done in this window only: most objects cover a small part of it.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (slice(max(rows[0] - margin, 0), rows[-1] + 1 + margin),
            slice(max(cols[0] - margin, 0), cols[-1] + 1 + margin))


_AROUND_KERNEL = np.ones((9, 9), dtype=np.uint8)


def _paint_layer(image: np.ndarray, layer: Layer, rng: np.random.Generator,
                 bank: np.ndarray) -> None:
    """Paint a fresh texture into ``image`` (H, W, 3) where the layer's object lies.

    The fill is shifted, if needed, so its mean colour differs from the mean of the pixels
    just around it by a minimum contrast: visible, yet not identified by colour.
    """
    cls, obj = layer
    box = _bbox(obj)
    inside = obj[box]
    # Strokes and specks get a flatter fill: texture a few px wide would only be noise.
    rough = 0.3 if cls in _SMALL_CLASSES else rng.uniform(0.4, 1.0)
    fill = _texture(rng, bank, inside.shape[0], inside.shape[1], rough)[inside]  # (N, 3)
    window = _bbox(obj, margin=_AROUND_KERNEL.shape[0] // 2)
    near = obj[window].view(np.uint8)
    around = cv2.dilate(near, _AROUND_KERNEL).astype(bool) & ~obj[window]
    if around.any():
        floor = _SMALL_CONTRAST if cls in _SMALL_CLASSES else _MIN_CONTRAST
        diff = fill.mean(axis=0) - image[window][around].mean(axis=0)
        dist = float(np.linalg.norm(diff))
        if dist < floor:
            direction = diff / dist if dist > 1e-3 else _unit_vector(rng)
            fill += (floor - dist) * direction
    image[box][inside] = fill


def _cast_shadow(image: np.ndarray, obj: np.ndarray, offset: np.ndarray,
                 strength: float) -> None:
    """Darken ``image`` (H, W, 3) under a soft copy of ``obj`` moved by ``offset`` (x, y)."""
    sigma = 1.5 + 0.5 * float(np.hypot(*offset))
    # Wide enough for the moved object and its blur, so the window changes nothing.
    window = _bbox(obj, margin=int(np.abs(offset).max() + 3 * sigma) + 1)
    near = obj[window].astype(np.float32)
    height, width = near.shape
    shift = np.float32([[1, 0, offset[0]], [0, 1, offset[1]]])
    moved = cv2.warpAffine(near, shift, (width, height))
    soft = cv2.GaussianBlur(moved, (0, 0), sigmaX=sigma)
    image[window] *= 1.0 - strength * soft[..., None]


def render_scenes_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one sample: an RGB uint8 image (size, size, 3) and a class-index mask (size, size).

    Objects are painted back to front over a pink-noise background, each after its soft
    shadow (one light direction per scene); then light, lens blur, sensor noise.
    """
    layers = scene_layers(rng, size)  # first, so the same rng state gives the same layers
    bank = _pink_noise(rng, count=4, size=size)
    image = _texture(rng, bank, size, size, rough=rng.uniform(0.5, 1.0))
    scale = size / _REFERENCE_SIZE
    shadow_offset = rng.uniform(-3.0, 3.0, size=2) * scale
    shadow_strength = rng.uniform(0.0, 0.4) if rng.random() < 0.7 else 0.0
    for layer in layers:
        if shadow_strength > 0:
            _cast_shadow(image, layer[1], shadow_offset, shadow_strength)
        _paint_layer(image, layer, rng, bank)
    image *= _illumination(rng, size)
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=rng.uniform(0.2, 0.5) * max(scale, 0.5))
    image += rng.normal(0.0, rng.uniform(2.0, 6.0), size=image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), label_map(layers, size)


# --------------------------------------------------------------------------- files


def generate_scenes(
    root: str | Path,
    num_train: int = 800,
    num_val: int = 100,
    image_size: int = 192,
    seed: int = 0,
) -> Path:
    """Generate the "scenes" dataset under ``root`` (mask values index ``SCENES_CLASSES``);
    see :func:`seg.data.synthetic.procedural.write_voc_dataset` for the layout."""
    return write_voc_dataset(root, render_scenes_sample, num_train, num_val, image_size, seed)
