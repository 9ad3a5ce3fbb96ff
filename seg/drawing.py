"""Drawing on uint8 RGB images ``(H, W, 3)``: class legends, column titles and outlined
overlays, shared by seg-predict's overlays and TensorBoard's image grids.

It needs only numpy, OpenCV and Pillow, so that any part of ``seg`` may import it."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = 0
IGNORE = 255
STRIP_COLOUR = (40, 40, 40)  # dark, so that white text and bright swatches stand out
TEXT_COLOUR = (255, 255, 255)
SWATCH_BORDER = (200, 200, 200)  # keeps a black (background) swatch visible on the strip
MARGIN = 4  # pixels between a strip's edge and its contents
GAP = 4  # pixels between a swatch and its name
SPACING = 12  # pixels between one legend entry and the next
SMALLEST_FONT = 8

Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def text_font(size: int) -> Font:
    """Pillow's built-in font at ``size`` pixels (no font file to find or download);
    Pillow before 10.1 only has its fixed-size bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def font_size_for(width: int) -> int:
    """A text size that stays legible on small images and does not swamp large ones."""
    return int(np.clip(width // 40, 11, 28))


def text_width(font: Font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def fitting_font(texts: Sequence[str], max_width: int, size: int) -> Font:
    """The largest font of at most ``size`` in which every one of ``texts`` fits in
    ``max_width`` pixels (or the smallest readable one, if none does)."""
    font = text_font(size)
    while size > SMALLEST_FONT and max(text_width(font, text) for text in texts) > max_width:
        size -= 1
        font = text_font(size)
    return font


def draw_text(draw: ImageDraw.ImageDraw, left: int, top: int, height: int, text: str,
              font: Font) -> None:
    """``text`` centred vertically in the ``height`` pixels below ``top``. Positioned by
    its measured box rather than by an anchor, which bitmap fonts do not support."""
    _, box_top, _, box_bottom = font.getbbox("Hg")
    draw.text((left, top + (height - (box_bottom - box_top)) // 2 - box_top), text,
              fill=TEXT_COLOUR, font=font)


def wrap_entries(widths: Sequence[int], max_width: int, line: int
                 ) -> tuple[list[tuple[int, int]], int, int]:
    """Where each legend entry of ``widths`` goes, in rows that wrap at ``max_width``;
    with the strip's width (wider only if one entry alone is) and height."""
    x, y, places, right = MARGIN, MARGIN, [], max_width
    for width in widths:
        if x > MARGIN and x + width > max_width - MARGIN:
            x, y = MARGIN, y + line + GAP
        places.append((x, y))
        right = max(right, x + width + MARGIN)
        x += width + SPACING
    return places, right, y + line + MARGIN


def draw_legend(image: np.ndarray, names: Sequence[str], colours: Sequence[Sequence[int]]
                ) -> np.ndarray:
    """``image`` with a strip below it holding a swatch of each of ``colours`` and the
    matching one of ``names``; the image's own pixels are not changed."""
    font = text_font(font_size_for(image.shape[1]))
    line = font.size if isinstance(font, ImageFont.FreeTypeFont) else 11
    widths = [line + GAP + text_width(font, name) for name in names]
    places, width, height = wrap_entries(widths, image.shape[1], line)
    canvas = Image.new("RGB", (width, image.shape[0] + height), STRIP_COLOUR)
    canvas.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for (left, top), name, colour in zip(places, names, colours, strict=True):
        top += image.shape[0]
        draw.rectangle([left, top, left + line - 1, top + line - 1],
                       fill=tuple(int(c) for c in colour), outline=SWATCH_BORDER)
        draw_text(draw, left + line + GAP, top, line, name, font)
    return np.array(canvas)  # a writable copy, unlike np.asarray of an Image


def draw_titles(image: np.ndarray, titles: Sequence[str], centres: Sequence[int],
                column_width: int) -> np.ndarray:
    """``image`` with a strip above it holding each of ``titles`` centred on the matching
    x of ``centres``, in a font small enough for ``column_width``."""
    font = fitting_font(titles, column_width - 2, font_size_for(image.shape[1]))
    line = font.size if isinstance(font, ImageFont.FreeTypeFont) else 11
    height = line + 2 * MARGIN
    canvas = Image.new("RGB", (image.shape[1], image.shape[0] + height), STRIP_COLOUR)
    canvas.paste(Image.fromarray(image), (0, height))
    draw = ImageDraw.Draw(canvas)
    for title, centre in zip(titles, centres, strict=True):
        draw_text(draw, centre - text_width(font, title) // 2, MARGIN, line, title, font)
    return np.array(canvas)  # a writable copy, unlike np.asarray of an Image


def outline_thickness(shape: tuple[int, ...]) -> int:
    """One pixel on small images, more on large photos where one would be invisible."""
    return max(1, round(min(shape[:2]) / 400))


def boundaries(labels: np.ndarray, thickness: int) -> np.ndarray:
    """Pixels within ``thickness`` of a pixel of another label: every region's boundary,
    on both sides of it (the neighbourhood's lowest label differs from its highest)."""
    kernel = np.ones((2 * thickness + 1, 2 * thickness + 1), np.uint8)
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    return cv2.erode(labels, kernel) != cv2.dilate(labels, kernel)


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float
            ) -> np.ndarray:
    """``image`` with each object class blended in at ``alpha`` and its regions outlined in
    full colour. Background (0) and ignored (255) pixels keep the photo's own values, so
    that the photo is not darkened where nothing was found."""
    colours = palette[np.minimum(labels, len(palette) - 1)]
    painted = (labels != BACKGROUND) & (labels != IGNORE)
    result = image.copy()
    result[painted] = (image[painted] * (1 - alpha) + colours[painted] * alpha).round()
    edge = painted & boundaries(labels, outline_thickness(labels.shape))
    result[edge] = colours[edge]
    return result


def overlay_with_legend(image: np.ndarray, labels: np.ndarray, palette: np.ndarray,
                        names: Sequence[str], alpha: float) -> np.ndarray:
    """``overlay`` with a legend of the object classes it shows (the background, if the
    image holds nothing else, so that the legend says so)."""
    present = [int(c) for c in np.unique(labels) if c < len(names)]
    shown = [c for c in present if c != BACKGROUND] or present
    return draw_legend(overlay(image, labels, palette, alpha), [names[c] for c in shown],
                       [palette[c] for c in shown])
