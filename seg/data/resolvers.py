"""Config interpolations that read the code's own tables, so that class names and the
ImageNet statistics are written once (in the readers and the transforms) and a folder
dataset's classes come from its classes.yaml."""

from __future__ import annotations

from omegaconf import ListConfig, OmegaConf

from seg.errors import BadValue

# The tables live in the dataset readers and the transforms, which import torch, OpenCV and
# albumentations: each resolver imports them when a config is resolved, not when every
# command (its --help too) registers the resolvers.


def class_names(reader: str) -> ListConfig:
    """``${seg.class_names:READER}``: the class names a dataset reader knows by itself."""
    from seg.data.readers import catalogue, reader_classes

    known = [name for name in catalogue() if reader_classes(name) is not None]
    if reader not in known:
        raise BadValue(f"seg.class_names: {reader!r} is not a reader with its own class "
                       f"names; known: {', '.join(known)}")
    return ListConfig(list(reader_classes(reader)))  # a ListConfig: see imagenet_mean


def folder_classes(root: str, field: str) -> ListConfig | int | str:
    """``${seg.folder_classes:ROOT,FIELD}``: the ``names``, ``count`` or ``palette`` of
    ``ROOT/classes.yaml`` (the VOC colour map when it gives no colours)."""
    from seg.data.folder import read_classes

    classes = read_classes(root)
    if field == "names":
        return ListConfig(classes["names"])  # a ListConfig: see imagenet_mean
    if field == "count":
        return len(classes["names"])
    if field == "palette":
        return ListConfig(classes["colors"]) if classes["colors"] else "voc"
    raise BadValue(f"seg.folder_classes: field {field!r} is not names, count or palette")


def imagenet_mean() -> ListConfig:
    """``${seg.imagenet_mean:}``: the per-channel RGB mean the pretrained encoders expect.

    A ListConfig, not a list: ``OmegaConf.resolve`` (``--cfg job --resolve``) cannot put
    a plain list where the interpolation was."""
    from seg.data.transforms import IMAGENET_MEAN

    return ListConfig(list(IMAGENET_MEAN))


def imagenet_std() -> ListConfig:
    """``${seg.imagenet_std:}``: the per-channel RGB standard deviation, as a ListConfig
    for the same reason."""
    from seg.data.transforms import IMAGENET_STD

    return ListConfig(list(IMAGENET_STD))


def timm_normalization(model_name: str, which: str) -> ListConfig:
    """``${seg.timm_normalization:MODEL,mean}`` (or ``std``): the normalisation timm model
    ``MODEL`` was pretrained with (its ``pretrained_cfg``; ImageNet's where it has none),
    which configs/model/encoder/timm.yaml gives the dataset, so that training, seg-predict
    and an exported model (the checkpoint records it) feed it what it expects."""
    if which not in ("mean", "std"):
        raise BadValue(f"seg.timm_normalization: {which!r} is neither mean nor std")
    from seg.settings import optional_package

    timm = optional_package("timm", "model.encoder.name=timm", extra="timm")
    pretrained = timm.get_pretrained_cfg(model_name)
    if pretrained is None or getattr(pretrained, which, None) is None:
        return imagenet_mean() if which == "mean" else imagenet_std()
    return ListConfig([float(v) for v in getattr(pretrained, which)])


def register_resolvers() -> None:
    """Make the interpolations known to OmegaConf (once per process)."""
    for name, resolver in (("seg.class_names", class_names),
                           ("seg.folder_classes", folder_classes),
                           ("seg.imagenet_mean", imagenet_mean),
                           ("seg.imagenet_std", imagenet_std),
                           ("seg.timm_normalization", timm_normalization)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
