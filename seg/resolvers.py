"""Config interpolations that read the code's own tables, so that class names and the
normalisation are written once (in the readers and in each encoder's pretrained record)
and a folder dataset's classes come from its classes.yaml.

They read both the dataset readers and the encoders, hence their place here, above
seg/data and seg/models."""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import ListConfig, OmegaConf

from seg.errors import BadValue

# The tables live in the dataset readers and the encoders, which import torch, OpenCV and
# albumentations: each resolver imports them when a config is resolved, not when every
# command (its --help too) registers the resolvers.


def class_names(reader: str) -> ListConfig:
    """``${seg.class_names:READER}``: the class names a dataset reader knows by itself."""
    from seg.data.readers import catalogue, reader_classes

    known = [name for name in catalogue() if reader_classes(name) is not None]
    if reader not in known:
        raise BadValue(f"seg.class_names: {reader!r} is not a reader with its own class "
                       f"names; known: {', '.join(known)}")
    return ListConfig(list(reader_classes(reader)))  # a ListConfig: see encoder_normalisation


def folder_classes(root: str, field: str) -> ListConfig | int | str:
    """``${seg.folder_classes:ROOT,FIELD}``: the ``names``, ``count`` or ``palette`` of
    ``ROOT/classes.yaml`` (the VOC colour map when it gives no colours)."""
    from seg.data.readers.folder import read_classes

    classes = read_classes(root)
    if field == "names":
        return ListConfig(classes["names"])  # a ListConfig: see encoder_normalisation
    if field == "count":
        return len(classes["names"])
    if field == "palette":
        return ListConfig(classes["colors"]) if classes["colors"] else "voc"
    raise BadValue(f"seg.folder_classes: field {field!r} is not names, count or palette")


def encoder_normalisation(encoder: object, which: str) -> ListConfig:
    """The ``mean`` or ``std`` of the pretrained record of the encoder that the
    ``model.encoder`` node ``encoder`` names (seg.models.encoders.Pretrained).

    A ListConfig, not a list: ``OmegaConf.resolve`` (``--cfg job --resolve``) cannot put
    a plain list where the interpolation was."""
    from seg.models.encoders import pretrained_of

    if not isinstance(encoder, Mapping):
        raise BadValue(f"seg.encoder_{which}: model.encoder is not a config node naming an "
                       f"encoder (got {type(encoder).__name__})")
    record = pretrained_of(encoder.get("name"), encoder)
    return ListConfig([float(value) for value in getattr(record, which)])


def encoder_mean(encoder: object) -> ListConfig:
    """``${seg.encoder_mean:${model.encoder}}``: the per-channel RGB mean the encoder's
    weights were trained with (ImageNet's for an encoder that publishes none)."""
    return encoder_normalisation(encoder, "mean")


def encoder_std(encoder: object) -> ListConfig:
    """``${seg.encoder_std:${model.encoder}}``: their per-channel standard deviation."""
    return encoder_normalisation(encoder, "std")


def register_resolvers() -> None:
    """Make the interpolations known to OmegaConf (once per process)."""
    for name, resolver in (("seg.class_names", class_names),
                           ("seg.folder_classes", folder_classes),
                           ("seg.encoder_mean", encoder_mean),
                           ("seg.encoder_std", encoder_std)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
