"""Class colours: the PASCAL VOC colour map, used to write and display palette-mode label
PNGs, and a dataset config's ``palette`` resolved to one colour per class."""

from __future__ import annotations

from seg.errors import BadValue


def voc_palette(num_colors: int = 256) -> list[tuple[int, int, int]]:
    """Return the standard PASCAL VOC colour map as ``num_colors`` RGB tuples.

    Class ``i`` spreads the bits of ``i`` over the high bits of R, G and B (three bits
    per round, most significant first), so small indices get well separated colours.
    Index 0 is black and index 255 (the "ignore" label) is ``(224, 224, 192)``.
    """
    palette: list[tuple[int, int, int]] = []
    for index in range(num_colors):
        r = g = b = 0
        c = index
        for j in range(8):
            r |= (c & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.append((r, g, b))
    return palette


def flat_palette() -> list[int]:
    """Return the 256-colour VOC palette flattened to 768 ints for ``PIL.Image.putpalette``."""
    return [channel for colour in voc_palette(256) for channel in colour]


def resolve_palette(palette, num_classes: int) -> list[list[int]]:
    """``voc`` names the PASCAL VOC colour map; otherwise a list of [r, g, b]."""
    colours = voc_palette() if palette == "voc" else [list(c) for c in palette]
    if len(colours) < num_classes:
        raise BadValue(f"dataset.palette has {len(colours)} colours for {num_classes} classes")
    return [list(c) for c in colours]
