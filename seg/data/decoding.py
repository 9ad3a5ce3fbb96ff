"""Safe decoding of image and mask files: every file a dataset, seg-predict or a script
reads goes through here, so that a bad file gives the same one-line :class:`SampleError`
(naming it and the fix) whatever reads it.

A file is checked before it is decoded: a regular file (no FIFO, no device), of a size an
image within the pixel limit can have, of a pixel count read from its header. Decoding
relies on process-wide settings of OpenCV and PIL, which :func:`configure_decoders`
applies when the first file is read (never on import).
"""

from __future__ import annotations

import functools
import io
import os
import stat
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, TiffImagePlugin

from seg.data.labels import IGNORE_INDEX
from seg.errors import BadValue
from seg.text import printable

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


class SampleError(BadValue):
    """A sample that cannot be used as it is. The message names the file and the problem.

    One positional argument only, so that a DataLoader worker can raise it again in the
    main process (with the worker's traceback as its message: so not escaped here). The
    names in a message are escaped where it is written (:func:`seg.text.printable`): a
    file's name may hold terminal escapes or line breaks, and the message reaches the
    terminal and the log (seg-data check, a skipped sample's warning).
    """


@functools.cache
def configure_decoders() -> None:
    """Set what decoding here needs of OpenCV's and PIL's process-wide settings, once per
    process. Every public read below calls it, and so does the dataset's constructor (a
    DataLoader worker forked after it inherits the settings; one started afresh sets them
    at its first read). Never on import: a program that imports seg.data and decodes
    nothing keeps its own settings."""
    # OpenCV's own thread pool oversubscribes the CPU when DataLoader workers run in parallel.
    cv2.setNumThreads(0)
    # OpenCV logs its decoders' troubles on stderr (libtiff's warnings, "can't read data"):
    # every decoding failure here is already one SampleError line naming the file, and those
    # lines beside it would only bury it (or, for a valid float TIFF, cry wolf).
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    # PIL's own pixel limit is one number for the whole process (a warning from 89 MP, an
    # error from 179 MP): it would refuse what dataset.max_image_pixels allows, and before
    # the size is known. Every read here checks the header against max_pixels instead.
    Image.MAX_IMAGE_PIXELS = None


def read_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an image file to uint8 HWC RGB with OpenCV (libjpeg-turbo, the fastest
    decoder at hand). The size is read from the header first, so an image of more than
    ``max_pixels`` is refused before anything is allocated. A file that cannot be used
    (empty, truncated, corrupt, not an image, too large) raises :class:`SampleError`.

    The pixels come in their stored order, as PIL (and so torchvision's references) reads
    them and masks: an EXIF orientation tag is not applied, so an image and its mask
    always align as stored. Of an animation (GIF, APNG, WebP), the first frame. An image
    of 32-bit samples (a float or integer TIFF) is read as :func:`to_uint8` says."""
    configure_decoders()
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
    configure_decoders()
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
    configure_decoders()
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
    configure_decoders()
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



def describe_values(values: Sequence, limit: int = 8) -> str:
    """The first ``limit`` values, comma-separated."""
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")

