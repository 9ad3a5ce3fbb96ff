"""The confusion matrix as a picture: rows the ground truth, columns the prediction, each
row in fractions of its pixels, shaded from white to dark blue with the percentage written
in, the class names along both axes. seg-eval writes it as confusion.png, and training's
evaluations show it in TensorBoard. Needs numpy and Pillow only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from seg.drawing import Font, text_font, text_width

CELL = 32  # pixels a side of a matrix cell: room for a percentage in a readable font
FONT_SIZE = 14
MARGIN = 6
MAX_NAME_CHARACTERS = 24  # longer class names are cut, so that the labels stay narrow
WHITE, DARK_BLUE = np.array([255, 255, 255]), np.array([8, 48, 107])
NO_PIXELS = (215, 215, 215)  # a row whose class has no ground-truth pixel
GRID = (200, 200, 200)  # each cell's first row and column: where white cells end
LABEL_COLOUR = (40, 40, 40)
AXIS_TITLES = ("rows: ground truth", "columns: prediction")


def row_fractions(counts: np.ndarray) -> np.ndarray:
    """Each row of ``counts`` as fractions of its sum; NaN where a row sums to 0."""
    totals = counts.sum(1, keepdims=True).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / totals, np.nan)


def ramp(fractions: np.ndarray) -> np.ndarray:
    """Fractions in [0, 1] as RGB uint8, from white (0) to dark blue (1); NaN grey."""
    shade = np.nan_to_num(fractions)[..., None]
    colours = np.rint(WHITE * (1 - shade) + DARK_BLUE * shade).astype(np.uint8)
    colours[np.isnan(fractions)] = NO_PIXELS
    return colours


def short_name(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARACTERS else name[:MAX_NAME_CHARACTERS - 3] + "..."


def label_band(names: Sequence[str]) -> int:
    """Pixels left of the matrix (the row labels) and above it (the column labels, turned):
    the widest label or axis title, with margins."""
    font = text_font(FONT_SIZE)
    texts = [short_name(name) for name in names] + list(AXIS_TITLES)
    return max(text_width(font, text) for text in texts) + 2 * MARGIN


def draw_confusion(counts: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """The confusion matrix ``counts[truth, prediction]`` as RGB uint8: each row normalised
    to fractions of its pixels, shaded from white (0) to dark blue (1) with the percentage
    written in (when 1 or more), a row without ground-truth pixels grey, the class names
    along both axes. ``label_band(names) + CELL * classes`` pixels a side."""
    fractions = row_fractions(np.asarray(counts))
    band, side = label_band(names), CELL * len(names)
    canvas = Image.new("RGB", (band + side, band + side), (255, 255, 255))
    cells = ramp(fractions).repeat(CELL, axis=0).repeat(CELL, axis=1)
    cells[::CELL, :], cells[:, ::CELL], cells[-1, :], cells[:, -1] = (GRID,) * 4
    canvas.paste(Image.fromarray(cells), (band, band))
    draw, font = ImageDraw.Draw(canvas), text_font(FONT_SIZE)
    for row, column in np.argwhere(np.nan_to_num(fractions) >= 0.005):
        text, shade = f"{100 * fractions[row, column]:.0f}", fractions[row, column]
        colour = (255, 255, 255) if shade > 0.5 else LABEL_COLOUR
        left = band + column * CELL + (CELL - text_width(font, text)) // 2
        write_centred(draw, (left, band + row * CELL), CELL, text, font, colour)
    for place, name in enumerate(names):
        text = short_name(name)
        left = band - MARGIN - text_width(font, text)
        write_centred(draw, (left, band + place * CELL), CELL, text, font, LABEL_COLOUR)
        label = turned_label(text, font)
        canvas.paste(label, (band + place * CELL, band - label.height))
    for line, title in enumerate(AXIS_TITLES):
        write_centred(draw, (MARGIN, MARGIN + line * (FONT_SIZE + MARGIN)), FONT_SIZE, title,
                      font, LABEL_COLOUR)
    return np.array(canvas)


def write_centred(draw: ImageDraw.ImageDraw, place: tuple[int, int], height: int, text: str,
                  font: Font, colour: tuple[int, int, int]) -> None:
    """``text`` from ``place``'s x, centred vertically in the ``height`` pixels below its y
    (positioned by its measured box: bitmap fonts have no anchors)."""
    _, box_top, _, box_bottom = font.getbbox("Hg")
    left, top = place
    draw.text((left, top + (height - (box_bottom - box_top)) // 2 - box_top), text,
              fill=colour, font=font)


def turned_label(text: str, font: Font) -> Image.Image:
    """A column's label, ``CELL`` wide, read upwards from a margin above its bottom."""
    strip = Image.new("RGB", (text_width(font, text) + MARGIN, CELL), (255, 255, 255))
    write_centred(ImageDraw.Draw(strip), (MARGIN, 0), CELL, text, font, LABEL_COLOUR)
    return strip.rotate(90, expand=True)
