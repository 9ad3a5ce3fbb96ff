"""The image and mask readers on every kind of file that does not decode: each is a
one-line :class:`SampleError` naming the file, never a decoder's own exception, and an
image over the pixel limit is refused from its header, before anything is allocated."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from seg.data.decoding import MAX_IMAGE_PIXELS, SampleError, read_image, read_label_image
from seg.data.loader import build_loader
from seg.data.readers.voc import VOCSegmentation
from tests.layouts import SIZE, make_voc, random_image


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload)))


def huge_png(width: int = 15000, height: int = 15000) -> bytes:
    """A valid grayscale PNG header of ``width`` x ``height`` with one row of pixel data:
    a few dozen bytes that a decoder would size at width x height."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
            + png_chunk(b"IEND", b""))


def valid_png() -> bytes:
    """A PNG of random pixels, ``SIZE``."""
    buffer = io.BytesIO()
    random_image(0).save(buffer, format="PNG")
    return buffer.getvalue()


NOT_AN_IMAGE = r"cannot decode {what} \(corrupt or not an image\); replace the file"
BAD_FILES = {  # content, and the message for an image or a mask ({what})
    "zero bytes": (b"", r"{what} file is empty \(0 bytes\); replace the file"),
    "truncated PNG": (valid_png()[: len(valid_png()) // 2], NOT_AN_IMAGE),
    "text named .jpg": (b"name,label\nfoo,1\n", NOT_AN_IMAGE),
    "15000 x 15000 PNG": (huge_png(), r"{what} is 15000x15000 \(225,000,000 pixels\), over "
                          r"the limit of 100,000,000; downscale or tile it, or raise the "
                          r"limit with dataset.max_image_pixels"),
}


READERS = {"image": (read_image, "bad.jpg"), "mask": (read_label_image, "bad.png")}


@pytest.mark.parametrize("what, fault", [
    *(("image", fault) for fault in BAD_FILES),
    *(("mask", fault) for fault in ("zero bytes", "text named .jpg", "15000 x 15000 PNG")),
])
def test_a_bad_file_is_a_one_line_sample_error_naming_it(tmp_path: Path, what: str,
                                                         fault: str) -> None:
    content, message = BAD_FILES[fault]
    read, name = READERS[what]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SampleError, match=message.format(what=what)) as raised:
        read(path)
    assert str(raised.value).startswith(f"{path}: ") and "\n" not in str(raised.value)


def test_the_pixel_limit_is_checked_before_decoding(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(huge_png())

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded an image over the limit")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    with pytest.raises(SampleError, match="over the limit"):
        read_image(path)
    assert MAX_IMAGE_PIXELS == 100_000_000


def test_the_pixel_limit_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    path.write_bytes(valid_png())
    pixels = SIZE[0] * SIZE[1]
    assert read_image(path, max_pixels=pixels).shape == (*SIZE, 3)
    with pytest.raises(SampleError, match=f"over the limit of {pixels - 1:,}"):
        read_image(path, max_pixels=pixels - 1)
    with pytest.raises(SampleError, match=f"mask is 48x40 .* over the limit of {pixels - 1:,}"):
        read_label_image(path, max_pixels=pixels - 1)


def test_an_opencv_error_is_a_sample_error(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "image.png"
    path.write_bytes(valid_png())

    def failing_decoder(*args: object) -> None:
        raise cv2.error("OpenCV(5.0.0) loadsave.cpp: error: (-215:Assertion failed)\n")

    monkeypatch.setattr(cv2, "imdecode", failing_decoder)
    with pytest.raises(SampleError) as raised:
        read_image(path)
    assert str(raised.value) == (f"{path}: cannot decode image (OpenCV: OpenCV(5.0.0) "
                                 "loadsave.cpp: error: (-215:Assertion failed)); replace the file")


def test_odd_image_modes_decode_as_before(tmp_path: Path) -> None:
    """The header check reads PIL's (width, height): it must not refuse or change what
    OpenCV decodes (EXIF rotation is not applied: the stored sides, as PIL reads them;
    16-bit keeps the high byte)."""
    rgb = np.random.default_rng(0).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image(tmp_path / "rotated.jpg").shape == (30, 20, 3)

    deep = np.random.default_rng(1).integers(0, 65536, (30, 20)).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png")
    assert np.array_equal(image[..., 0], (deep >> 8).astype(np.uint8))

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert read_image(tmp_path / "cmyk.jpg").shape == (30, 20, 3)

    palette = Image.fromarray(rgb).convert("P")
    palette.save(tmp_path / "palette.png")
    assert np.array_equal(read_image(tmp_path / "palette.png"),
                          np.array(palette.convert("RGB")))
    assert np.array_equal(read_label_image(tmp_path / "palette.png"), np.array(palette))

    Image.fromarray(rgb[:1, :1]).save(tmp_path / "dot.png")
    assert np.array_equal(read_image(tmp_path / "dot.png"), rgb[:1, :1])


@pytest.mark.parametrize("split", ["train", "val"])
def test_skip_leaves_out_a_zero_byte_image(tmp_path: Path, split: str) -> None:
    root = make_voc(tmp_path / "VOC2012")
    dataset = VOCSegmentation(root, split, on_error="skip")
    path = dataset.samples[1].image
    path.write_bytes(b"")
    assert dataset[1] == {"skipped": f"{path}: image file is empty (0 bytes); replace the file"}
    batches = list(build_loader(dataset, 1, train=False))
    assert [batch["id"] for batch in batches if batch["id"]] == \
        [[sample_id] for sample_id in dataset.ids if sample_id != dataset.ids[1]]
    assert sum(len(batch["skipped"]) for batch in batches) == 1


def test_an_image_over_the_dataset_limit_is_skipped(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "VOC2012")
    dataset = VOCSegmentation(root, "val", on_error="skip", max_image_pixels=100)
    assert "over the limit of 100" in dataset[0]["skipped"]
    with pytest.raises(ValueError, match="dataset.max_image_pixels must be a positive integer, "
                                         "got 0"):
        VOCSegmentation(root, "val", max_image_pixels=0)


# -- images and masks of more than 8 bits -------------------------------------------------


def rgb_floats(scale: float) -> np.ndarray:
    """Random float32 RGB pixels in [0, scale]."""
    return np.random.default_rng(3).random((*SIZE, 3), dtype=np.float32) * scale


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_a_float_tiff_image_reads_scaled_to_8_bits(tmp_path: Path, scale: float) -> None:
    """[0, 1] is scaled to [0, 255]; values in [0, 255] are taken as they are. PIL cannot
    open an RGB float TIFF, so its size comes from its tags."""
    pixels = rgb_floats(scale)
    cv2.imwrite(str(tmp_path / "float.tif"), pixels[..., ::-1])  # OpenCV writes BGR
    expected = np.rint(pixels * (255 / scale)).astype(np.uint8)
    assert np.abs(read_image(tmp_path / "float.tif").astype(int) - expected).max() <= 1


def test_float_and_integer_gray_tiffs_read_as_gray_rgb(tmp_path: Path) -> None:
    gray = rgb_floats(1.0)[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.tif")  # PIL's "F" mode
    expected = np.rint(gray * 255).astype(np.uint8)
    assert np.array_equal(read_image(tmp_path / "gray.tif"), np.dstack([expected] * 3))
    Image.fromarray(expected.astype(np.int32)).save(tmp_path / "int.tif")  # "I" mode
    assert np.array_equal(read_image(tmp_path / "int.tif"), np.dstack([expected] * 3))


@pytest.mark.parametrize("values, message", [
    (-0.5, r"image of float32 values from -0.5 to \S+; seg reads values in \[0, 255\] "
           r"\(floats also in \[0, 1\]\): save it as 8-bit, or scaled into that range"),
    (np.nan, "image holds NaN or infinite values; replace the file"),
])
def test_a_float_image_of_no_known_scale_is_one_line(tmp_path: Path, values: float,
                                                     message: str) -> None:
    pixels = rgb_floats(1.0)
    pixels[0, 0] = values
    path = tmp_path / "float.tif"
    cv2.imwrite(str(path), pixels)
    with pytest.raises(SampleError, match=f"^{path}: {message}$"):
        read_image(path)


def test_opencv_writes_nothing_to_stderr(tmp_path: Path, capfd) -> None:
    """OpenCV logged a warning for a valid float TIFF, and three lines for a broken one,
    beside seg's own one line."""
    cv2.imwrite(str(tmp_path / "float.tif"), rgb_floats(1.0))
    read_image(tmp_path / "float.tif")
    buffer = io.BytesIO()
    random_image(0).save(buffer, format="TIFF")
    (tmp_path / "cut.tif").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(SampleError, match="cut.tif: cannot decode image"):
        read_image(tmp_path / "cut.tif")
    assert capfd.readouterr().err == ""


def test_a_tiff_only_opencv_opens_is_held_to_the_pixel_limit(tmp_path: Path,
                                                             monkeypatch) -> None:
    path = tmp_path / "float.tif"
    cv2.imwrite(str(path), rgb_floats(1.0))
    monkeypatch.setattr(cv2, "imdecode", lambda *args: pytest.fail("decoded"))
    limit = SIZE[0] * SIZE[1] - 1
    with pytest.raises(SampleError, match=f"image is 48x40 .* over the limit of {limit:,}"):
        read_image(path, max_pixels=limit)


@pytest.mark.parametrize("save", [
    lambda labels, path: Image.fromarray(labels.astype(np.int32)).save(path, format="TIFF"),
    lambda labels, path: Image.fromarray(labels.astype(np.uint16)).save(path, format="PNG"),
], ids=["int32 TIFF", "uint16 PNG"])
def test_a_wide_integer_mask_reads_its_labels(tmp_path: Path, save) -> None:
    labels = np.random.default_rng(4).choice(np.array([0, 1, 20, 255]), SIZE)
    save(labels, tmp_path / "mask.png")
    mask = read_label_image(tmp_path / "mask.png")
    assert mask.dtype == np.uint8 and np.array_equal(mask, labels)
    labels[0, :2] = [300, 60000]
    save(labels, tmp_path / "mask.png")
    with pytest.raises(SampleError, match=r"label values 300, 60000 are outside 0-255"):
        read_label_image(tmp_path / "mask.png")


def test_a_folder_of_float_tiffs_and_uint16_masks_trains_its_samples(tmp_path: Path) -> None:
    from seg.data.readers.folder import FolderSegmentation
    from tests.layouts import make_folder

    root = make_folder(tmp_path / "folder", count=2)
    pixels = rgb_floats(1.0)
    (root / "images" / "tile_000.png").unlink()
    cv2.imwrite(str(root / "images" / "tile_000.tif"), pixels[..., ::-1])
    labels = np.random.default_rng(5).choice(np.array([0, 2, 255]), SIZE)
    Image.fromarray(labels.astype(np.uint16)).save(root / "masks" / "tile_000.png")
    image, mask = FolderSegmentation(root, "train", val_fraction=0.0).load(0)
    assert np.abs(image.astype(int) - np.rint(pixels * 255)).max() <= 1
    assert np.array_equal(mask, labels)
