"""The readers open regular files only, within a size, and read pixels as stored: a FIFO,
a device, a socket or a folder named like an image is the named sample error and never
hangs; a file too large is refused before a byte is read; GIFs read; an EXIF orientation
is not applied, to images as to masks, and a mismatch it explains says so."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from seg.cli.data import main as seg_data
from seg.data import decoding
from seg.data.decoding import SampleError, exif_orientation, read_image, read_label_image
from seg.data.readers.folder import IMAGE_SUFFIXES, FolderSegmentation
from seg.data.readers.voc import VOCSegmentation
from seg.errors import BadValue
from tests.layouts import make_folder, make_voc, save_palette_png

READERS = {"image": read_image, "mask": read_label_image}


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """Fail a test that blocks (on a FIFO, say) instead of waiting forever."""

    def hung(*args: object) -> None:  # pytest's Failed: no `except OSError` catches it
        pytest.fail("a reader blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def special_file(path: Path, kind: str) -> Path:
    """``path`` made a FIFO, a link to /dev/zero, a folder or a socket."""
    if kind == "a FIFO":
        os.mkfifo(path)
    elif kind == "a character device":
        path.symlink_to("/dev/zero")  # read whole, it would take all memory
    elif kind == "a folder":
        path.mkdir()
    else:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()  # the socket file stays
    return path


@pytest.mark.parametrize("kind", ["a FIFO", "a character device", "a folder", "a socket"])
@pytest.mark.parametrize("what", ["image", "mask"])
def test_a_special_file_is_a_sample_error_naming_it(tmp_path: Path, kind: str,
                                                    what: str) -> None:
    path = special_file(tmp_path / "x.png", kind)
    with pytest.raises(SampleError) as raised:
        READERS[what](path)
    assert str(raised.value) == (f"{path}: the {what} file is {kind}, not a regular file; "
                                 f"replace it with the {what} file")


def test_a_file_too_large_is_refused_before_it_is_read(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
    size = path.stat().st_size
    monkeypatch.setattr(decoding, "MAX_FILE_BYTES", size - 1)
    monkeypatch.setattr(decoding, "open", lambda *args, **kwargs: pytest.fail("opened"),
                        raising=False)  # nothing may be read
    with pytest.raises(SampleError) as raised:
        read_image(path, max_pixels=1)
    assert str(raised.value) == (
        f"{path}: image file is {size:,} bytes, over the limit of {size - 1:,} for an image "
        "of at most 1 pixels; replace it, or raise the limit with dataset.max_image_pixels "
        "(max_image_pixels for seg-predict)")


def test_the_file_limit_grows_with_the_pixel_limit(tmp_path: Path, monkeypatch) -> None:
    """Any image within the default pixel limit fits the default file limit."""
    assert decoding.MAX_FILE_BYTES >= decoding.MAX_BYTES_PER_PIXEL * decoding.MAX_IMAGE_PIXELS
    path = tmp_path / "image.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
    monkeypatch.setattr(decoding, "MAX_FILE_BYTES", 1)
    assert read_image(path, max_pixels=16 * 16).shape == (16, 16, 3)  # 2,048 bytes allowed


def test_check_lists_a_fifo_and_a_device_and_finishes(tmp_path: Path, capsys) -> None:
    """... and reads a link to an image: links inside a dataset are the user's choice."""
    root = make_voc(tmp_path / "VOC2012")
    linked = root / "JPEGImages" / "2007_000002.jpg"
    linked.rename(tmp_path / "elsewhere.jpg")
    linked.symlink_to(tmp_path / "elsewhere.jpg")
    fifo = root / "JPEGImages" / "2007_000001.jpg"
    fifo.unlink()
    os.mkfifo(fifo)
    device = root / "SegmentationClass" / "2008_000000.png"
    device.unlink()
    device.symlink_to("/dev/zero")
    code = seg_data(["check", "dataset=voc", f"dataset.root={root}", "dataset.num_workers=0"])
    out = capsys.readouterr().out
    assert code == 1 and "train: 4 samples, 3 ok, 1 problem(s)" in out
    assert f"[train] {fifo}: the image file is a FIFO, not a regular file" in out
    assert f"[val] {device}: the mask file is a character device, not a regular file" in out
    assert "train: 1 problem(s) (1 special files); val: 1 problem(s) (1 special files)" in out


def test_predict_skips_a_fifo_and_a_device_and_writes_the_rest(checkpoint: Path,
                                                               tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(images / "a.png")
    fifo = special_file(images / "fifo.png", "a FIFO")
    device = special_file(images / "zero.jpg", "a character device")
    result = subprocess.run(
        [sys.executable, "-m", "seg.cli.predict", f"checkpoint={checkpoint}",
         f"input={images}", f"output={tmp_path / 'masks'}", "device=cpu", "progress=false"],
        capture_output=True, text=True, timeout=50)
    output = result.stdout + result.stderr  # the log goes to stdout
    assert result.returncode == 1, output
    assert f"{fifo}: the image file is a FIFO, not a regular file" in output
    assert f"{device}: the image file is a character device" in output
    assert (tmp_path / "masks" / "a.png").is_file() and "Traceback" not in output


# -- GIF --------------------------------------------------------------------------------


def animated_gif(path: Path) -> np.ndarray:
    """A two-frame GIF at ``path``; its first frame as RGB."""
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    frames = [Image.fromarray(pixels).convert("P"), Image.fromarray(255 - pixels).convert("P")]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return np.array(frames[0].convert("RGB"))


def test_a_gif_reads_its_first_frame_whatever_opencv_decodes(tmp_path: Path,
                                                              monkeypatch) -> None:
    """Older OpenCV builds decode no GIF (imdecode gives None)."""
    first = animated_gif(tmp_path / "moving.gif")
    monkeypatch.setattr(cv2, "imdecode", lambda *args: None)
    assert np.array_equal(read_image(tmp_path / "moving.gif"), first)
    assert ".gif" in IMAGE_SUFFIXES  # seg-predict and folder datasets list them


# -- EXIF orientation ---------------------------------------------------------------------


def with_orientation(path: Path, pixels: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[decoding.ORIENTATION_TAG] = orientation
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    return path


def test_an_image_reads_as_stored_not_as_its_exif_turns_it(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    path = with_orientation(tmp_path / "turned.jpg", pixels, 3)  # shown rotated 180°
    with Image.open(path) as stored:  # PIL applies no EXIF: torchvision's reading
        expected = np.array(stored.convert("RGB"))
    assert np.array_equal(read_image(path), expected)
    assert exif_orientation(path) == 3


def turned_voc(tmp_path: Path, mask_size: tuple[int, int]) -> tuple[Path, Path]:
    """A VOC tree whose first train image (48x40 stored) has EXIF orientation 6, with a
    mask of ``mask_size`` (height, width); the image and mask paths."""
    root = make_voc(tmp_path / "VOC2012")
    image = root / "JPEGImages" / "2007_000000.jpg"
    with Image.open(image) as stored:
        with_orientation(image, np.array(stored), 6)
    mask = root / "SegmentationClass" / "2007_000000.png"
    save_palette_png(np.zeros(mask_size, np.uint8), mask)
    return image, mask


def test_a_mask_of_the_stored_image_fits_whatever_the_exif(tmp_path: Path) -> None:
    image, _ = turned_voc(tmp_path, mask_size=(40, 48))
    item = VOCSegmentation(image.parents[1], "train")[0]
    assert tuple(item["image"].shape) == (3, 40, 48) and tuple(item["mask"].shape) == (40, 48)


def test_a_mask_of_the_displayed_image_names_the_exif(tmp_path: Path) -> None:
    image, mask = turned_voc(tmp_path, mask_size=(48, 40))
    with pytest.raises(SampleError) as raised:
        VOCSegmentation(image.parents[1], "train")[0]
    assert str(raised.value) == (
        f"{mask}: mask is 40x48 but its image 2007_000000.jpg is 48x40; they must match; its "
        "EXIF orientation is 6 (shown rotated 90° clockwise), which seg does not apply: save "
        "the image without the tag, or fit the mask to the stored pixels")


def test_check_warns_of_exif_turned_images_and_passes(tmp_path: Path, capsys) -> None:
    image, _ = turned_voc(tmp_path, mask_size=(40, 48))
    code = seg_data(["check", "dataset=voc", f"dataset.root={image.parents[1]}",
                     "dataset.num_workers=0"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert (f"warning: [train] 1 image(s) have an EXIF orientation other than 1, which seg "
            f"does not apply (images and masks are read as stored): {image} (6); check that "
            "their masks fit the stored pixels") in out
    assert "no problems" in out


def test_an_sbd_mat_that_is_a_fifo_is_a_sample_error(tmp_path: Path) -> None:
    from seg.data.readers.voc import read_sbd_mat

    path = special_file(tmp_path / "2008_000000.mat", "a FIFO")
    with pytest.raises(SampleError, match="the mask file is a FIFO, not a regular file"):
        read_sbd_mat(path)


def test_a_classes_yaml_that_is_a_fifo_is_named(tmp_path: Path) -> None:
    from seg.data.readers.folder import read_classes

    path = special_file(tmp_path / "classes.yaml", "a FIFO")
    with pytest.raises(BadValue, match=f"^{path} is not a regular file: replace it"):
        read_classes(tmp_path)


def test_the_check_report_escapes_class_names(tmp_path: Path) -> None:
    from seg.data.check import SplitReport, format_report

    text = format_report([SplitReport("train", samples=1)], ["\x1b[2J\nINFO fake", "b"])
    assert "\x1b" not in text and "\nINFO fake" not in text and "\\x1b[2J\\nINFO fake" in text


# Names a file may have that would drive a terminal: clear the screen, set the window's
# title, start a fake log line, turn the rest of the line right to left.
TERMINAL_TRAPS = ("clear\x1b[2J", "title\x1b]0;x\x07", "fake\nINFO all good", "bidi\u202e")


def holds_no_control(text: str) -> bool:
    """No character below 0x20 but the line ends, no ESC, no right-to-left override."""
    return all(ord(char) >= 0x20 or char == "\n" for char in text) \
        and "\x1b" not in text and "\u202e" not in text and "\x7f" not in text


def trapped_folder(root: Path) -> Path:
    """A folder dataset whose images named with TERMINAL_TRAPS hold no image, and the
    first of them is turned by its EXIF orientation (a warning naming it)."""
    root = make_folder(root, count=2)
    for name in TERMINAL_TRAPS:
        (root / "images" / f"{name}.png").write_bytes(b"not an image")
        save_palette_png(np.zeros((4, 4), np.uint8), root / "masks" / f"{name}.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(
        root / "images" / f"{TERMINAL_TRAPS[0]}x.png", exif=exif)
    save_palette_png(np.zeros((40, 48), np.uint8), root / "masks" / f"{TERMINAL_TRAPS[0]}x.png")
    return root


def test_check_escapes_the_names_of_files(tmp_path: Path, capsys) -> None:
    root = trapped_folder(tmp_path / "folder")
    code = seg_data(["check", "dataset=folder", f"dataset.root={root}",
                     "dataset.val_fraction=0.5", "dataset.num_workers=0"])
    captured = capsys.readouterr()
    assert code == 1
    assert holds_no_control(captured.out) and holds_no_control(captured.err), captured.out
    for name in TERMINAL_TRAPS:  # each named, escaped
        escaped = name.encode("unicode_escape").decode()  # as repr writes it
        assert f"{escaped}.png: cannot decode image" in captured.out
    assert "clear\\x1b[2Jx.png (6)" in captured.out  # the EXIF warning


def test_a_skipped_sample_names_its_file_escaped(tmp_path: Path, caplog) -> None:
    from seg.engine.batches import warn_skipped

    root = trapped_folder(tmp_path / "folder")
    dataset = FolderSegmentation(root, "train", val_fraction=0.0, on_error="skip")
    skipped = [item["skipped"] for item in map(dataset.__getitem__, range(len(dataset)))
               if "skipped" in item]
    assert len(skipped) == len(TERMINAL_TRAPS)
    with caplog.at_level(logging.WARNING, logger="seg.engine"):
        warn_skipped(skipped, "epoch 0")
    assert all(holds_no_control(message) and "\n" not in message for message in skipped)
    assert holds_no_control(caplog.text) and caplog.text.count("\n") == 1
