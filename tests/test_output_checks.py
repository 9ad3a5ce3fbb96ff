"""seg-eval, seg-predict and seg-export check where they write before they work (a file in
the way, a folder that cannot be written, a full disk); seg-predict bounds the pixels the
model gets at once, skips an image whose outputs' names would not fit, and names memory
that runs out in one line; seg-eval's advice for a bad val image is its own setting."""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

from seg.cli.eval import evaluate_checkpoint
from seg.cli.export import export
from seg.cli.predict import predict
from tests.test_use import compose_config, predict_config, random_images


class Usage(NamedTuple):
    total: int
    used: int
    free: int


def full_disk(monkeypatch, free: int = 1000) -> None:
    """The output's disk has only ``free`` bytes left."""
    monkeypatch.setattr("seg.trained.outputs.shutil.disk_usage",
                        lambda path: Usage(10**12, 10**12 - free, free))


def read_only(monkeypatch) -> None:
    """Nothing can be made in any folder (as on a read-only disk; root ignores modes)."""

    def refused(**kwargs) -> str:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("seg.files.tempfile.mkdtemp", refused)


def never(what: str):
    def called(*args, **kwargs):
        raise AssertionError(f"{what} ran before the output was checked")

    return called


# -- seg-eval ------------------------------------------------------------------------------


def eval_config(checkpoint: Path, *overrides: str):
    return compose_config("eval", f"checkpoint={checkpoint}", "device=cpu", "progress=false",
                          *overrides)


def test_eval_refuses_an_unwritable_output_dir_before_it_evaluates(
        checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("seg.engine.evaluate", never("the evaluation"))
    read_only(monkeypatch)
    with pytest.raises(ValueError, match=r"output_dir=.*out: cannot write in .* \(Read-only "
                                         "file system\\): choose a folder you can write to"):
        evaluate_checkpoint(eval_config(checkpoint), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_eval_refuses_a_full_disk_and_a_file_in_the_way_before_it_evaluates(
        checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("seg.engine.evaluate", never("the evaluation"))
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(NotADirectoryError, match=r"output_dir=.*taken/out: .*taken is a file, "
                                                 "not a folder: choose another output_dir"):
        evaluate_checkpoint(eval_config(checkpoint), tmp_path / "taken" / "out")
    with pytest.raises(ValueError, match="its name is longer than 255 bytes"):
        evaluate_checkpoint(eval_config(checkpoint), tmp_path / ("a" * 256) / "out")
    full_disk(monkeypatch)
    with pytest.raises(ValueError, match=r"eval.json needs about 0.1 MB and its disk has "
                                         "1.0 kB free: free some space"):
        evaluate_checkpoint(eval_config(checkpoint), tmp_path / "out")


def test_eval_out_of_memory_is_one_line(checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                           "3400000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr("seg.engine.evaluate", out_of_memory)
    with pytest.raises(ValueError, match="out of memory evaluating on cpu .*: lower batch_size"):
        evaluate_checkpoint(eval_config(checkpoint), tmp_path)


def bad_label(shapes_root: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the tiny dataset whose first val mask holds label 77, and that id."""
    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    first = (root / "ImageSets/Segmentation/val.txt").read_text().split()[0]
    Image.fromarray(np.full((64, 64), 77, np.uint8)).save(root / f"SegmentationClass/{first}.png")
    return root, first


def test_eval_advises_its_own_on_error(checkpoint: Path, shapes_root: Path,
                                       tmp_path: Path) -> None:
    root, first = bad_label(shapes_root, tmp_path)
    with pytest.raises(ValueError, match=r"label values 77 .*; fix the mask or set "
                                         r"on_error=skip$") as raised:
        evaluate_checkpoint(eval_config(checkpoint, f"dataset_root={root}"), tmp_path / "a")
    assert "dataset.on_error" not in str(raised.value)
    (root / f"JPEGImages/{first}.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"cannot decode image .*; replace the file, or set "
                                         "on_error=skip to evaluate without it"):
        evaluate_checkpoint(eval_config(checkpoint, f"dataset_root={root}"), tmp_path / "b")
    metrics = evaluate_checkpoint(eval_config(checkpoint, f"dataset_root={root}",
                                              "on_error=skip"), tmp_path / "c")
    assert (tmp_path / "c" / "eval.json").is_file() and 0 <= metrics["mIoU"] <= 1


# -- seg-predict ---------------------------------------------------------------------------


def test_predict_refuses_an_unwritable_output_before_it_loads_the_model(
        checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    images = tmp_path / "images"
    random_images(images, "a.png")
    monkeypatch.setattr("seg.trained.checkpoint.load_trained", never("loading the model"))
    read_only(monkeypatch)
    with pytest.raises(ValueError, match=r"output=.*out: cannot write in .* \(Read-only file "
                                         "system\\)"):
        predict(predict_config(checkpoint, images, tmp_path / "out"))
    monkeypatch.undo()
    full_disk(monkeypatch, free=10)
    with pytest.raises(ValueError, match="an image's mask and overlay needs about 0.1 MB and "
                                         "its disk has 10 bytes free"):
        predict(predict_config(checkpoint, images, tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_predict_skips_an_image_whose_output_name_would_not_fit(checkpoint: Path,
                                                                 tmp_path: Path) -> None:
    images, output = tmp_path / "images", tmp_path / "out"
    # 249 bytes: a valid name, but its overlay's would be 257; the escape is printed escaped
    long = "\x1b[2J" + "x" * 241 + ".png"
    random_images(images, "a.png", long)
    failed = predict(predict_config(checkpoint, images, output))
    assert len(failed) == 1 and failed[0].startswith(
        f"{images}/\\x1b[2J{'x' * 241}.png: its outputs' names would be longer than 255 bytes")
    assert failed[0].endswith("rename the image to at most 243 bytes before its suffix")
    assert sorted(p.name for p in output.iterdir()) == ["a.png", "a_overlay.jpg"]
    random_images(images, "y" * 243 + ".png")  # the longest that fits
    assert len(predict(predict_config(checkpoint, images, tmp_path / "again"))) == 1


def test_predict_names_an_input_it_cannot_look_at(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"input=.* cannot be read \(File name too long\): "
                                         "pass an image or a folder of them"):
        predict(predict_config(checkpoint, tmp_path / ("a" * 256), tmp_path / "out"))
    random_images(tmp_path / "images", "a.png")
    with pytest.raises(ValueError, match="its name is longer than 255 bytes"):
        predict(predict_config(checkpoint, tmp_path / "images", tmp_path / ("a" * 256) / "out"))


def png_of(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")  # a few kB
    return buffer.getvalue()


def test_predict_skips_an_image_over_the_default_pixel_cap(checkpoint: Path,
                                                            tmp_path: Path) -> None:
    images, output = tmp_path / "images", tmp_path / "out"
    random_images(images, "a.png")
    (images / "big.png").write_bytes(png_of(4000, 4001))  # 16.004 MP: about 2 GB to segment
    failed = predict(predict_config(checkpoint, images, output))
    assert len(failed) == 1 and "big.png: image is 4000x4001 (16,004,000 pixels), over the " \
                                "limit of 16,000,000" in failed[0]
    assert sorted(p.name for p in output.iterdir()) == ["a.png", "a_overlay.jpg"]


def test_batches_stay_within_max_pixels(monkeypatch) -> None:
    from seg.trained.prediction import same_size_batches

    monkeypatch.setattr("seg.trained.prediction.read_image",
                        lambda path, **kwargs: np.zeros((8, 4, 3), np.uint8))  # 32 pixels
    files = [Path(name) for name in "abcde"]
    batches = same_size_batches(files, 4, [], max_pixels=64)
    assert [[path.name for path, _ in batch] for batch in batches] == [
        ["a", "b"], ["c", "d"], ["e"]]


def test_predict_out_of_memory_skips_those_images(checkpoint: Path, tmp_path: Path,
                                                  monkeypatch, caplog) -> None:
    from seg.trained.prediction import Predictor

    images, output = tmp_path / "images", tmp_path / "out"
    random_images(images, "a.png")
    Image.new("RGB", (30, 20)).save(images / "big\x1b[2J.png")
    labels = Predictor.labels

    def runs_out_for_big(self, batch):
        if batch[0].shape[:2] == (20, 30):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to "
                               "allocate 3400000000 bytes. Error code 12")
        return labels(self, batch)

    monkeypatch.setattr(Predictor, "labels", runs_out_for_big)
    caplog.set_level(logging.WARNING, logger="seg.predict")
    failed = predict(predict_config(checkpoint, images, output))
    assert failed == [f"{images}/big\\x1b[2J.png: out of memory segmenting it (30x20, 1 in the "
                      "batch): use a smaller image, a lower max_image_pixels to skip such "
                      "images, batch_size=1, or a machine with more memory"]
    assert caplog.records[0].getMessage() == f"skipped {failed[0]}"
    assert sorted(p.name for p in output.iterdir()) == ["a.png", "a_overlay.jpg"]


def test_predict_names_an_out_of_memory_overlay_and_keeps_bugs_loud(
        checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    from seg.trained.prediction import Predictor

    images = tmp_path / "images"
    random_images(images, "a.png")

    def no_memory(*args):
        raise MemoryError

    monkeypatch.setattr(Predictor, "encode", no_memory)
    failed = predict(predict_config(checkpoint, images, tmp_path / "out"))
    assert failed == [f"{images}/a.png: out of memory drawing its overlay: use a smaller "
                      "image, a lower max_image_pixels to skip such images, batch_size=1, or "
                      "a machine with more memory"]

    def bug(*args):
        raise RuntimeError("shape mismatch")  # not memory: seg's own bug, its traceback kept

    monkeypatch.setattr(Predictor, "encode", bug)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        predict(predict_config(checkpoint, images, tmp_path / "again"))


# -- seg-export ----------------------------------------------------------------------------


def test_export_checks_its_output_before_it_exports(checkpoint: Path, tmp_path: Path,
                                                    monkeypatch) -> None:
    monkeypatch.setattr("seg.trained.onnx.export_onnx", never("the export"))
    long = tmp_path / ("m" * 251 + ".onnx")
    with pytest.raises(ValueError, match="its name is longer than 255 bytes"):
        export(compose_config("export", f"checkpoint={checkpoint}", f"output={long}"))
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(NotADirectoryError, match="taken is a file, not a folder: choose "
                                                 "another output"):
        export(compose_config("export", f"checkpoint={checkpoint}",
                              f"output={tmp_path / 'taken' / 'm.onnx'}"))
    full_disk(monkeypatch)
    with pytest.raises(ValueError, match=r"output=.*: the model needs about [0-9.]+ MB and its "
                                         "disk has 1.0 kB free"):
        export(compose_config("export", f"checkpoint={checkpoint}",
                              f"output={tmp_path / 'm.onnx'}"))
    read_only(monkeypatch)
    with pytest.raises(ValueError, match=r"output=.*new/m.onnx: cannot write in .* \(Read-only"):
        export(compose_config("export", f"checkpoint={checkpoint}",
                              f"output={tmp_path / 'new' / 'm.onnx'}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
