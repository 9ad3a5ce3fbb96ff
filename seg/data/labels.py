"""The label constants every part of seg agrees on. Plain Python, no numpy or torch: the
engine's loss and metrics import it without pulling in the dataset decoders."""

from __future__ import annotations

# The mask value of "ignore" (object outlines, unlabelled pixels, padding). A constant,
# not a setting: uint8 masks, the readers' label tables, the transforms' padding, the
# loss and the metrics must all agree on it.
IGNORE_INDEX = 255
