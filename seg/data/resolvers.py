"""Config interpolations that read the datasets' own tables, so that class names are
written once (in the readers) and a folder dataset's classes come from its classes.yaml."""

from __future__ import annotations

from omegaconf import OmegaConf

from seg.data.ade20k import ADE20K_CLASSES
from seg.data.cityscapes import CITYSCAPES_CLASSES
from seg.data.folder import read_classes
from seg.data.voc import VOC_CLASSES

CLASS_NAMES = {"voc": VOC_CLASSES, "cityscapes": CITYSCAPES_CLASSES, "ade20k": ADE20K_CLASSES}


def class_names(dataset: str) -> list[str]:
    """``${seg.class_names:NAME}``: the class names of a standard dataset."""
    if dataset not in CLASS_NAMES:
        raise ValueError(f"seg.class_names: unknown dataset {dataset!r}; "
                         f"known: {', '.join(CLASS_NAMES)}")
    return list(CLASS_NAMES[dataset])


def folder_classes(root: str, field: str) -> list | int | str:
    """``${seg.folder_classes:ROOT,FIELD}``: the ``names``, ``count`` or ``palette`` of
    ``ROOT/classes.yaml`` (the VOC colour map when it gives no colours)."""
    classes = read_classes(root)
    if field == "names":
        return classes["names"]
    if field == "count":
        return len(classes["names"])
    if field == "palette":
        return classes["colors"] or "voc"
    raise ValueError(f"seg.folder_classes: field {field!r} is not names, count or palette")


def register_resolvers() -> None:
    """Make the interpolations known to OmegaConf (once per process)."""
    for name, resolver in (("seg.class_names", class_names),
                           ("seg.folder_classes", folder_classes)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
