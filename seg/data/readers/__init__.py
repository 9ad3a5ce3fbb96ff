"""The catalogue of dataset readers, and a config's splits built from it.

Each module of this package is one reader (or a family: VOC and VOC + SBD), which
registers itself where it is defined::

    @READERS.register("voc")
    class VOCSegmentation(SegmentationDataset): ...

and a dataset config names it per split (``dataset.train.reader: voc``) with its
options. Training, ``seg-data``, pretraining and a checkpoint's evaluation all build a
split with :func:`build_split`; a checkpoint can only name a reader of the catalogue,
with options of its signature (see seg.catalogue).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping

from omegaconf import DictConfig, OmegaConf

from seg.catalogue import Catalogue
from seg.data.base import ReadOptions, SegmentationDataset


def shared_options() -> dict[str, object]:
    """What every reader passes on to SegmentationDataset (caching, bad samples, the
    pixel limit), each with its default: options of every reader."""
    parameters = inspect.signature(SegmentationDataset.__init__).parameters
    options = {name: parameters[name].default for name in ReadOptions.__annotations__}
    # A config's cache is true, false or auto: checked as a string's kind, which admits
    # the booleans, not as its default's (False: a reader built in code caches nothing).
    return {**options, "cache": "auto"}


# The transform is the caller's: training's augmentation, or evaluation's.
READERS = Catalogue("dataset reader", given=("transform",), name_key="reader",
                    extra_options=shared_options())


@functools.cache
def import_readers() -> None:
    """Import every module of this package, once, so that each reader has registered
    itself. Not on import: each reader module imports READERS from here."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def catalogue() -> Catalogue:
    """READERS, every reader of seg.data.readers registered: a new reader is one module
    in this package, listed nowhere else."""
    import_readers()
    return READERS


def reader_classes(name: str) -> tuple[str, ...] | None:
    """The class names reader ``name`` knows by itself (VOC's 21), None when the data
    names them (a folder's classes.yaml)."""
    return getattr(catalogue().entry(name).builder, "classes", None)


def build_split(data: Mapping, split: str, transform: Callable | None,
                **settings: object) -> SegmentationDataset:
    """``dataset.<split>``'s reader with its options (``settings`` replace some of them),
    reading through ``transform``."""
    node = data[split]
    if isinstance(node, DictConfig):  # its resolved values, plain lists among them
        node = OmegaConf.to_container(node, resolve=True)
    node = {**node, **settings} if isinstance(node, Mapping) else node
    return catalogue().build_from(node, f"dataset.{split}", transform=transform)


def training_split(data: Mapping) -> SegmentationDataset:
    """``dataset.train`` with the training augmentation the ``dataset.*`` keys set."""
    from seg.data.transforms import augmentation

    return build_split(data, "train", augmentation(data))


def validation_split(data: Mapping) -> SegmentationDataset:
    """``dataset.val`` with the evaluation transform (pixels as decoded, as float32)."""
    from seg.data.transforms import eval_transform

    return build_split(data, "val", eval_transform(mean=data["mean"], std=data["std"]))
