"""The embedded procedural datasets, written to disk in PASCAL VOC's layout (which the
voc reader reads): "shapes" (flat shapes on smooth noise) and "scenes" (textures,
occlusion, thin strokes), both drawn by procedural's writer, byte-identical for a seed.
Made by ``make data`` (scripts/make_shapes.py, scripts/make_scenes.py)."""
