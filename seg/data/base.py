"""What every segmentation dataset shares: checked decoding, label mapping, caching and
what to do with a bad sample.

A reader (VOC, Cityscapes, ADE20K, a folder) only lists its samples and says how its raw
label values map to class indices; decoding and every check live here, so that a bad file
gives the same one-line error whatever the layout.
"""

from __future__ import annotations

import io
import logging
import os
import random
import stat
import struct
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypedDict

import cv2
import numpy as np
import torch
from PIL import Image, TiffImagePlugin
from torch.utils.data import Dataset, get_worker_info

from seg.data.cache import (
    MB,
    cache_budget_bytes,
    cache_budget_setting,
    cache_copies,
    cache_mode,
    decoded_bytes,
)
from seg.errors import BadValue, IsAFolder, MissingPath, NotAFolder, UserError
from seg.files import read_run_text
from seg.settings import positive_int
from seg.text import printable

log = logging.getLogger("seg.data")

# OpenCV's own thread pool oversubscribes the CPU when DataLoader workers run in parallel.
cv2.setNumThreads(0)
# OpenCV logs its decoders' troubles on stderr (libtiff's warnings, "can't read data"):
# every decoding failure here is already one SampleError line naming the file, and those
# lines beside it would only bury it (or, for a valid float TIFF, cry wolf).
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
# PIL's own pixel limit is one number for the whole process (a warning from 89 MP, an error
# from 179 MP): it would refuse what dataset.max_image_pixels allows, and before the size
# is known. Every read here checks the header against max_pixels instead.
Image.MAX_IMAGE_PIXELS = None

# The mask value of "ignore" (object outlines, unlabelled pixels, padding). A constant,
# not a setting: uint8 masks, the readers' label tables, the transforms' padding, the
# loss and the metrics must all agree on it.
IGNORE_INDEX = 255
ON_ERROR = ("raise", "skip")
# A larger image is refused from its header, before any pixel is decoded: 100 MP is a
# 10000 x 10000 photo, 300 MB as RGB, far beyond what a training crop needs.
MAX_IMAGE_PIXELS = 100_000_000
# A file is refused from its size, before a byte is read, when no image within the pixel
# limit can be that large: 8 bytes a pixel is uncompressed 16-bit RGBA (a TIFF), so 100 MP
# is 800 MB at most. The limit grows with a raised dataset.max_image_pixels.
MAX_FILE_BYTES = 1 << 30
MAX_BYTES_PER_PIXEL = 8
NON_BLOCKING = getattr(os, "O_NONBLOCK", 0)  # Windows has none (and no FIFOs)
SPECIAL_FILES = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
                 stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
                 stat.S_IFDIR: "a folder"}
# How a viewer turns an image for display, by its EXIF orientation tag (1: as stored).
ORIENTATION_TAG = 0x0112
ORIENTATIONS = {2: "mirrored", 3: "rotated 180°", 4: "mirrored upside down",
                5: "mirrored across a diagonal", 6: "rotated 90° clockwise",
                7: "mirrored across a diagonal", 8: "rotated 90° counter-clockwise"}
_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_TIFF_STARTS = (b"II*\x00", b"MM\x00*")
# PIL's modes of 32-bit samples (float, integer), which OpenCV's colour decoding refuses.
DEEP_IMAGE_MODES = ("F", "I")
# PIL's modes of integer labels wider than 8 bits (a uint16 PNG, an int32 TIFF).
INTEGER_LABEL_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
TIFF_WIDTH, TIFF_HEIGHT = 256, 257  # the tags of the image's size
# A split list lists ids: kilobytes, a few MB for the largest datasets.
MAX_SPLIT_LIST_BYTES = 64 << 20


class SampleError(BadValue):
    """A sample that cannot be used as it is. The message names the file and the problem.

    One positional argument only, so that a DataLoader worker can raise it again in the
    main process (with the worker's traceback as its message: so not escaped here). The
    names in a message are escaped where it is written (:func:`seg.text.printable`): a
    file's name may hold terminal escapes or line breaks, and the message reaches the
    terminal and the log (seg-data check, a skipped sample's warning).
    """


@dataclass(frozen=True)
class Sample:
    """One image and its label file."""

    id: str
    image: Path
    mask: Path


def read_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an image file to uint8 HWC RGB with OpenCV (libjpeg-turbo, the fastest
    decoder at hand). The size is read from the header first, so an image of more than
    ``max_pixels`` is refused before anything is allocated. A file that cannot be used
    (empty, truncated, corrupt, not an image, too large) raises :class:`SampleError`.

    The pixels come in their stored order, as PIL (and so torchvision's references) reads
    them and masks: an EXIF orientation tag is not applied, so an image and its mask
    always align as stored. Of an animation (GIF, APNG, WebP), the first frame. An image
    of 32-bit samples (a float or integer TIFF) is read as :func:`to_uint8` says."""
    data = read_file(path, "image", max_pixels)
    if data[:2] == _JPEG_START and not data.rstrip(b"\x00").endswith(_JPEG_END):
        # libjpeg decodes a truncated JPEG with a grey bottom and only a warning
        raise SampleError(f"{printable(path)}: truncated JPEG (no end marker); replace the file")
    image_format, mode = read_header(path, data, max_pixels, "image")
    if image_format == "GIF":  # older OpenCV builds decode no GIF (pyproject allows 4.8)
        with open_image(path, data, "image") as gif:
            return decode_with_pil(path, gif, "image")
    if mode is None or mode in DEEP_IMAGE_MODES:  # OpenCV's colour decoding refuses them
        return to_rgb(path, to_uint8(path, decode_with_opencv(path, data, cv2.IMREAD_UNCHANGED)))
    return cv2.cvtColor(decode_with_opencv(path, data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def read_header(path: Path, data: bytes, max_pixels: int, what: str
                ) -> tuple[str | None, str | None]:
    """PIL's ``(format, mode)`` of ``data``, from its header alone, its pixel count checked.
    A TIFF of 32-bit colour samples, which PIL cannot open (and OpenCV can), is
    ``("TIFF", None)``, its size read from its first directory."""
    try:
        header = open_image(path, data, what)
    except SampleError:
        if not data.startswith(_TIFF_STARTS):
            raise
        check_pixel_count(path, tiff_size(path, data, what), max_pixels, what)
        return "TIFF", None
    with header:
        check_pixel_count(path, header.size, max_pixels, what)
        return header.format, header.mode


def tiff_size(path: Path, data: bytes, what: str) -> tuple[int, int]:
    """``(width, height)`` of a TIFF from the tags of its first directory (no pixel read)."""
    try:
        with warnings.catch_warnings():  # PIL warns of a short tag before it fails
            warnings.simplefilter("ignore")
            directory = TiffImagePlugin.ImageFileDirectory_v2(data[:8])
            stream = io.BytesIO(data)
            stream.seek(directory.next)
            directory.load(stream)
        return int(directory[TIFF_WIDTH]), int(directory[TIFF_HEIGHT])
    except (KeyError, TypeError, ValueError, OSError, SyntaxError, struct.error):
        raise SampleError(f"{printable(path)}: cannot decode {what} (corrupt or not an image); "
                          "replace the file") from None


def decode_with_opencv(path: Path, data: bytes, flags: int) -> np.ndarray:
    """The pixels of ``data`` decoded by OpenCV with ``flags``, EXIF orientation ignored
    (IMREAD_UNCHANGED, -1, stays itself when or-ed, and never applies it)."""
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8),
                              flags | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as error:  # .err is OpenCV's failed check, when it names one
        reason = getattr(error, "err", None) or " ".join(str(error).split())
        raise SampleError(f"{printable(path)}: cannot decode image (OpenCV: {reason}); "
                          "replace the file") from None
    if pixels is None:
        raise SampleError(f"{printable(path)}: cannot decode image (corrupt or not an image); "
                          "replace the file")
    return pixels


def to_uint8(path: Path, pixels: np.ndarray) -> np.ndarray:
    """Image pixels of any depth as uint8. 8-bit as they are; 16-bit by their high byte,
    as OpenCV reads 16-bit images; floats all in [0, 1] scaled to [0, 255]; other floats
    and integers taken as they are (rounded) when all in [0, 255]. Anything else (NaN,
    negative values, values over 255) is one line: seg cannot guess their scale."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return (pixels >> 8).astype(np.uint8)
    if not np.isfinite(pixels).all():
        raise SampleError(f"{printable(path)}: image holds NaN or infinite values; replace "
                          "the file")
    low, high = float(pixels.min()), float(pixels.max())
    if pixels.dtype.kind == "f" and low >= 0 and high <= 1:
        return np.rint(pixels * 255).astype(np.uint8)
    if low >= 0 and high <= 255:
        return np.rint(pixels).astype(np.uint8)
    raise SampleError(f"{printable(path)}: image of {pixels.dtype} values from {low:g} to "
                      f"{high:g}; seg reads values in [0, 255] (floats also in [0, 1]): save "
                      "it as 8-bit, or scaled into that range")


def to_rgb(path: Path, pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels of OpenCV's channel order (gray, BGR or BGRA) as RGB."""
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    conversion = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
    if channels not in conversion:
        raise SampleError(f"{printable(path)}: image has {channels} channels; expected 1 (gray), 3 "
                          "(RGB) or 4 (RGBA)")
    return cv2.cvtColor(pixels, conversion[channels])


def read_label_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a label PNG: HW uint8 for index masks (palette "P" or grayscale "L" mode:
    the pixel values are the labels; 16- or 32-bit integers too, each in 0-255), HW3
    uint8 for RGB colour masks. Checked as :func:`read_image` checks images."""
    with open_image(path, read_file(path, "mask", max_pixels), "mask") as label:
        check_pixel_count(path, label.size, max_pixels, "mask")
        if label.mode in INTEGER_LABEL_MODES:
            return narrow_labels(path, decode_with_pil(path, label, "mask", mode=None,
                                                       dtype=None))
        if label.mode not in ("P", "L", "RGB", "RGBA"):
            raise SampleError(f"{printable(path)}: mask is {label.mode} mode; expected P, L or RGB "
                              "(or integer labels of 16 or 32 bits)")
        if label.mode in ("P", "L"):
            return decode_with_pil(path, label, "mask", mode=None)
        return decode_with_pil(path, label, "mask")


def narrow_labels(path: Path, labels: np.ndarray) -> np.ndarray:
    """Labels stored in more than 8 bits as uint8; each must be one of 0-255, the values
    of every dataset's labels (255: ignored)."""
    outside = np.unique(labels[(labels < 0) | (labels > IGNORE_INDEX)])
    if outside.size:
        raise SampleError(f"{printable(path)}: label values {describe_values(outside)} are outside "
                          "0-255, which no dataset uses; fix the mask or set "
                          "dataset.on_error=skip")
    return labels.astype(np.uint8)


def decode_with_pil(path: Path, image: Image.Image, what: str, mode: str | None = "RGB",
                    dtype: type | None = np.uint8) -> np.ndarray:
    """The pixels of ``image`` (its first frame), converted to ``mode`` (None: as stored),
    as ``dtype`` (None: as stored)."""
    try:
        return np.array(image if mode is None else image.convert(mode), dtype=dtype)
    except (OSError, SyntaxError, ValueError) as error:  # PIL's words for broken data
        raise SampleError(f"{printable(path)}: cannot decode {what} ({printable(error)}); "
                          "replace the file") from None


def read_file(path: Path, what: str, max_pixels: int = MAX_IMAGE_PIXELS) -> bytes:
    """The bytes of an image or mask file; a missing, unreadable, empty or special one (see
    :func:`open_regular`) is a :class:`SampleError`."""
    with open_regular(path, what, max_pixels) as file:
        try:
            data = file.read()
        except OSError as error:  # an I/O error
            raise unreadable(path, what, error) from None
    if not data:
        raise SampleError(f"{printable(path)}: {what} file is empty (0 bytes); replace the file")
    return data


def open_regular(path: Path, what: str, max_pixels: int = MAX_IMAGE_PIXELS) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (or a link to one) of a size an
    image of ``max_pixels`` can have. Anything else is refused before a byte is read: a FIFO
    would wait forever for a writer, a device such as /dev/zero never ends. The type is
    checked before opening (no device is opened) and again after (it may have changed)."""
    try:
        check_regular(path, what, os.stat(path), max_pixels)
        file = open(path, "rb", opener=open_non_blocking)  # noqa: SIM115 - returned open
    except FileNotFoundError:
        raise SampleError(f"{printable(path)}: {what} file not found") from None
    except OSError as error:  # no permission, an I/O error
        raise unreadable(path, what, error) from None
    try:
        check_regular(path, what, os.fstat(file.fileno()), max_pixels)
    except SampleError:
        file.close()
        raise
    return file


def open_non_blocking(path: str, flags: int) -> int:
    """An ``open`` opener that never waits: opening a FIFO waits for a writer otherwise."""
    return os.open(path, flags | NON_BLOCKING)


def check_regular(path: Path, what: str, info: os.stat_result, max_pixels: int) -> None:
    """Refuse a file that is not regular, or larger than any image of ``max_pixels``."""
    if not stat.S_ISREG(info.st_mode):
        kind = SPECIAL_FILES.get(stat.S_IFMT(info.st_mode), "a special file")
        raise SampleError(f"{printable(path)}: the {what} file is {kind}, not a regular file; "
                          f"replace it with the {what} file")
    limit = max(MAX_FILE_BYTES, MAX_BYTES_PER_PIXEL * max_pixels)
    if info.st_size > limit:
        raise SampleError(
            f"{printable(path)}: {what} file is {info.st_size:,} bytes, over the limit of "
            f"{limit:,} for an image of at most {max_pixels:,} pixels; replace it, or raise the "
            "limit with dataset.max_image_pixels (max_image_pixels for seg-predict)")


def unreadable(path: Path, what: str, error: OSError) -> SampleError:
    return SampleError(f"{printable(path)}: cannot read the {what} file "
                       f"({printable(error.strerror or error)}); check that it is a readable "
                       "file")


def exif_orientation(path: Path) -> int:
    """The EXIF orientation tag of the image at ``path`` (see ORIENTATIONS), from its header;
    1 (as stored) when it has none or it cannot be read. seg does not apply it, so this only
    explains why a mask drawn on the image as displayed does not fit."""
    try:
        with open_regular(path, "image") as file, Image.open(file) as header:
            if header.format == "PNG" and "exif" not in header.info:
                return 1  # a tag after the pixels: PIL would decode them all to find it
            orientation = header.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a broken header or tag only means no explanation
        return 1
    return orientation if orientation in ORIENTATIONS else 1


def image_size(path: Path) -> tuple[int, int] | None:
    """``(height, width)`` of the image at ``path``, from its header (no pixel decoded);
    None when it cannot be read: reading the sample reports why."""
    try:
        with open_regular(path, "image") as file, Image.open(file) as header:
            return header.height, header.width
    except (OSError, ValueError, SyntaxError):  # SampleError is a ValueError
        return None


def exif_note(path: Path) -> str:
    """``"; its EXIF orientation is ..."`` for an image that viewers turn, else ``""``."""
    orientation = exif_orientation(path)
    if orientation == 1:
        return ""
    return (f"; its EXIF orientation is {orientation} (shown {ORIENTATIONS[orientation]}), "
            "which seg does not apply: save the image without the tag, or fit the mask to "
            "the stored pixels")


def open_image(path: Path, data: bytes, what: str) -> Image.Image:
    """``data`` opened with PIL, which reads only the header (size and mode) until the
    pixels are asked for; a file PIL cannot even identify is a :class:`SampleError`."""
    try:
        return Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        raise SampleError(f"{printable(path)}: cannot decode {what} (corrupt or not an image); "
                          "replace the file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # only where something set PIL's own limit again (the warning if warnings are errors)
        raise SampleError(f"{printable(path)}: {what} is too large to decode "
                          f"({printable(error)}); downscale or tile it") from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL's words for broken headers
        raise SampleError(f"{printable(path)}: cannot decode {what} ({printable(error)}); "
                          "replace the file") from None


def check_pixel_count(path: Path, size: tuple[int, int], max_pixels: int, what: str) -> None:
    """Refuse an image of more than ``max_pixels`` pixels (``size`` is PIL's (w, h))."""
    width, height = size
    if width * height > max_pixels:
        raise SampleError(
            f"{printable(path)}: {what} is {width}x{height} ({width * height:,} pixels), over the "
            f"limit of {max_pixels:,}; downscale or tile it, or raise the limit with "
            "dataset.max_image_pixels (max_image_pixels for seg-predict)")


def class_lut(num_classes: int, raw_to_class: dict[int, int] | None = None) -> np.ndarray:
    """A 256-entry table from raw mask value to class index: -1 marks a value the dataset
    never uses. By default ``0..C-1`` map to themselves and 255 is ignored."""
    lut = np.full(256, -1, dtype=np.int16)
    if raw_to_class is None:
        raw_to_class = {value: value for value in range(num_classes)}
        raw_to_class[IGNORE_INDEX] = IGNORE_INDEX
    for raw, index in raw_to_class.items():
        lut[raw] = index
    return lut


def describe_values(values: Sequence, limit: int = 8) -> str:
    """The first ``limit`` values, comma-separated."""
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


class ReadOptions(TypedDict, total=False):
    """What every reader passes on to :class:`SegmentationDataset` unchanged."""

    cache: bool | str
    on_error: str
    max_image_pixels: int
    cache_budget_mb: int | str


class SegmentationDataset(Dataset):
    """Samples of (image, label file), decoded, checked and mapped to class indices.

    Items are ``{"image": FloatTensor[3, H, W], "mask": LongTensor[H, W], "id": str}``.
    ``transform`` is an albumentations ``Compose`` called as
    ``transform(image=uint8 HWC RGB, mask=uint8 HW)`` that ends with normalisation and
    ``ToTensorV2``. Without a transform the image is scaled to [0, 1].

    Every decoded mask is checked: same size as its image and no value outside the
    dataset's labels (``label_map``). A bad sample raises :class:`SampleError`; with
    ``on_error="skip"`` the item is instead ``{"skipped": message}``, which
    :func:`seg.data.loader.collate` leaves out of the batch and reports.

    ``cache=True`` keeps every decoded sample in memory after its first read: decoding is
    a third of the loading time of small images. Each DataLoader worker keeps its own
    cache, so it pays with ``num_workers=0`` or persistent workers. ``cache="auto"`` does
    so when all those copies fit ``cache_budget_mb`` (MB, or ``"auto"``: a quarter of the
    available memory, at most 4096 MB), decided from the image headers on the first read
    or by :meth:`plan_cache` (see ``seg.data.cache``).

    An image or mask of more than ``max_image_pixels`` pixels is a bad sample, found from
    its header before it is decoded. ``source`` (the split list, or what the samples were
    found in) names the split in messages.
    """

    #: what the raw label values mean, for error messages
    label_description = "class indices"

    def __init__(
        self,
        samples: Sequence[Sample],
        num_classes: int,
        transform: Callable | None = None,
        *,
        label_map: np.ndarray | None = None,
        source: str = "",
        cache: bool | str = False,
        on_error: str = "raise",
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        cache_budget_mb: int | str = "auto",
    ) -> None:
        if on_error not in ON_ERROR:
            raise BadValue(f"dataset.on_error={on_error!r}: use one of {', '.join(ON_ERROR)}")
        self.max_image_pixels = positive_int(max_image_pixels, "dataset.max_image_pixels")
        self.source = printable(source or "the dataset")  # for messages: escaped
        if not samples:
            raise BadValue(f"{self.source} lists no samples: check the split name and the "
                           "dataset.root folder")
        self.samples = list(samples)
        self.num_classes = num_classes
        self.transform = transform
        self.on_error = on_error
        self.label_map = class_lut(num_classes) if label_map is None else label_map
        self.cache_budget_mb = cache_budget_setting(cache_budget_mb)
        mode = cache_mode(cache)
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if mode is True else None
        self.cache_planned = mode != "auto"  # auto: decided on the first read

    @property
    def ids(self) -> list[str]:
        return [sample.id for sample in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def plan_cache(self, workers: int = 0) -> None:
        """``cache="auto"``: keep the decoded samples in memory if the copies that ``workers``
        DataLoader workers (0: the main process) will hold fit the budget. Called before
        the workers start, so that they inherit the decision; the first call decides."""
        if self.cache_planned:
            return
        self.cache_planned = True
        copies, budget = cache_copies(workers), cache_budget_bytes(self.cache_budget_mb)
        needed = decoded_bytes(map(image_size, (s.image for s in self.samples)),
                               budget // copies)
        fits = needed * copies <= budget
        self.cache = {} if fits else None
        if fits:
            log.info("dataset.cache=auto: keeping the decoded samples of %s in memory "
                     "(%.1f MB per copy, copies: %d, budget: %.0f MB)",
                     self.source, needed / MB, copies, budget / MB)
        else:
            log.info("dataset.cache=auto: decoding %s at every read: its decoded samples "
                     "(copies: %d) would take over the budget of %.0f MB "
                     "(dataset.cache_budget_mb)", self.source, copies, budget / MB)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the checked ``(uint8 HWC RGB image, uint8 HW class mask)``, untransformed."""
        if not self.cache_planned:  # not planned before the workers started
            info = get_worker_info()
            self.plan_cache(info.num_workers if info is not None else 0)
        if self.cache is None:
            return self.decode(index)
        if index not in self.cache:
            self.cache[index] = self.decode(index)
        image, mask = self.cache[index]
        return image.copy(), mask.copy()  # copies: a transform may write into its input

    def decode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Read sample ``index`` from disk, check it and map its labels to class indices."""
        sample = self.samples[index]
        image = read_image(sample.image, self.max_image_pixels)
        raw = self.read_mask(sample.mask)
        if raw.shape[:2] != image.shape[:2]:
            raise SampleError(
                f"{printable(sample.mask)}: mask is {raw.shape[1]}x{raw.shape[0]} but its "
                f"image {printable(sample.image.name)} is {image.shape[1]}x{image.shape[0]}; "
                f"they must match{exif_note(sample.image)}")
        return image, self.map_labels(raw, sample.mask)

    def read_mask(self, path: Path) -> np.ndarray:
        """The raw label values of ``path`` (HW uint8). Readers of other formats override it."""
        mask = read_label_image(path, self.max_image_pixels)
        if mask.ndim == 3:
            raise SampleError(f"{printable(path)}: RGB colour mask where {self.label_description} "
                              "were expected; save it as an index (P or L mode) PNG")
        return mask

    def labels_of(self, path: Path) -> tuple[np.ndarray, str]:
        """The raw value -> class table for the mask at ``path``, and what its values mean."""
        return self.label_map, self.label_description

    def map_labels(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Map raw values to class indices; a value the dataset does not use is an error."""
        label_map, meaning = self.labels_of(path)
        counts = np.bincount(raw.ravel(), minlength=256)
        unknown = np.flatnonzero((counts > 0) & (label_map < 0))
        if unknown.size:
            raise SampleError(
                f"{printable(path)}: label values {describe_values(unknown)} are not {meaning} "
                f"(allowed: {compact_ranges(np.flatnonzero(label_map >= 0))}); fix the mask "
                "or set dataset.on_error=skip"
            )
        known = label_map >= 0
        if np.array_equal(label_map[known], np.flatnonzero(known)):
            return raw  # identity: nothing to map
        return cv2.LUT(raw, label_map.clip(0, 255).astype(np.uint8))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """``key`` is an index, or ``(index, seed)`` to seed this sample's augmentation
        (see ``seg.data.sampler.TrainSampler``)."""
        index, augmentation_seed = key if isinstance(key, tuple) else (key, None)
        if augmentation_seed is not None and hasattr(self.transform, "set_random_state"):
            # One generator pair for the whole pipeline. Compose.set_random_seed gives
            # every transform its own pair from the same seed: their draws coincide (the
            # flip follows the scale), and building them is a quarter of a cached sample.
            self.transform.set_random_state(np.random.default_rng(augmentation_seed),
                                            random.Random(augmentation_seed))
        try:
            image, mask = self.load(index)
        except SampleError as error:
            if self.on_error == "raise":
                raise
            return {"skipped": str(error)}
        return self.to_item(image, mask, self.samples[index].id)

    def to_item(self, image: np.ndarray, mask: np.ndarray, sample_id: str) -> dict[str, Any]:
        if self.transform is None:
            image_t = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
            mask_t = torch.from_numpy(mask).long()
        else:
            out = self.transform(image=image, mask=mask)
            image_t = out["image"]
            if not isinstance(image_t, torch.Tensor):
                # Tolerate transforms without ToTensorV2: numpy HWC -> tensor CHW.
                image_t = torch.from_numpy(np.ascontiguousarray(image_t)).permute(2, 0, 1)
            image_t = image_t.float()
            mask_t = out["mask"]
            if not isinstance(mask_t, torch.Tensor):
                mask_t = torch.from_numpy(np.ascontiguousarray(mask_t))
            mask_t = mask_t.long()
        return {"image": image_t, "mask": mask_t, "id": sample_id}


def compact_ranges(values: Sequence[int]) -> str:
    """``[0, 1, 2, 3, 255]`` -> ``"0-3, 255"``."""
    parts: list[str] = []
    values = [int(v) for v in values]
    start = previous = values[0]
    for value in [*values[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if value is not None:
            start = previous = value
    return ", ".join(parts)


def require_dir(path: Path, what: str, hint: str) -> Path:
    """``path`` if it is a folder, else a one-line error naming it and the fix."""
    if path.is_file():
        raise NotAFolder(f"{what} is a file, not a folder: {printable(path)}; {hint}")
    if not path.is_dir():
        raise MissingPath(f"{what} not found: {printable(path)}; {hint}")
    return path


def read_id_list(path: Path, hint: str) -> list[str]:
    """Ids of a split list file, one per line (only the first word of a line counts).
    Read through seg.files: a regular file only (a FIFO never hangs, /dev/zero is refused),
    of at most MAX_SPLIT_LIST_BYTES; anything else is one line naming it and ``hint``.
    Each id must name something inside the dataset folder (see :func:`check_id`)."""
    if path.is_dir():  # seg.files opens a folder, then fails to wrap it (not a UserError)
        raise IsAFolder(f"split file {printable(path)} is a folder, not a file; {hint}")
    try:
        text = read_run_text(path, "split file", MAX_SPLIT_LIST_BYTES)  # drops a leading BOM
    except UserError as error:
        raise type(error)(f"{error}; {hint}") from None
    return [check_id(line.split()[0], path, number)
            for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def check_id(sample_id: str, list_file: Path, line: int) -> str:
    """``sample_id`` if it stays inside the dataset folder and prints as it is. Ids are
    joined to the root to find the files, so an absolute id or one with ``..`` would read
    files outside it (a symlink inside the root is the user's own choice and is followed)."""
    parts = Path(sample_id).parts
    if Path(sample_id).is_absolute() or ".." in parts:
        raise BadValue(f"{printable(list_file)}, line {line}: id {sample_id!r} points outside "
                       "the dataset folder; list ids relative to it (no leading / and no ..)")
    if not sample_id.isprintable():  # a BOM mid-file, a zero-width space: invisible in a path
        raise BadValue(f"{printable(list_file)}, line {line}: id {sample_id!r} holds a "
                       "character that does not print; remove it (save the file as plain "
                       "UTF-8 text)")
    return sample_id
