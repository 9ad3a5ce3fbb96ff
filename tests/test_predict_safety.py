"""seg-predict, seg-eval and seg-export never write through a link nor over an input, keep
earlier results unless told, and seg-predict holds at most a batch of decoded images,
says what it skipped, and segments subfolders when asked."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seg.cli.eval import evaluate_checkpoint
from seg.cli.export import export
from seg.cli.predict import predict
from seg.data.readers.folder import IMAGE_SUFFIXES
from tests.test_use import compose_config, predict_config, random_images

# -- outputs never land on an input, nor go through a link ---------------------------------


@pytest.mark.parametrize("alias", [os.symlink, os.link], ids=["symlink", "hard link"])
def test_overwrite_never_replaces_an_input_under_another_name(alias, checkpoint: Path,
                                                              tmp_path: Path) -> None:
    images, output = tmp_path / "input", tmp_path / "output"
    before = random_images(images, "photo.png")
    output.mkdir()
    target = "../input/photo.png" if alias is os.symlink else images / "photo.png"
    alias(target, output / "photo.png")
    with pytest.raises(FileExistsError, match="output/photo.png is the input .*input/photo.png"):
        predict(predict_config(checkpoint, images, output, "overwrite=true"))
    assert (images / "photo.png").read_bytes() == before["photo.png"]


def test_overwrite_never_writes_through_a_link(checkpoint: Path, tmp_path: Path) -> None:
    images, output = tmp_path / "images", tmp_path / "output"
    random_images(images, "a.png")
    output.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("not seg's to replace")
    (output / "a.png").symlink_to(outside)
    with pytest.raises(ValueError, match="already holds a.png of an earlier run"):
        predict(predict_config(checkpoint, images, output))
    with pytest.raises(FileExistsError, match="output/a.png is a symbolic link"):
        predict(predict_config(checkpoint, images, output, "overwrite=true"))
    assert outside.read_text() == "not seg's to replace"
    assert sorted(p.name for p in output.iterdir()) == ["a.png"]


# -- streaming: memory bounded by the batch ------------------------------------------------


def test_predict_writes_before_it_has_read_more_than_a_batch(checkpoint: Path, tmp_path: Path,
                                                             monkeypatch) -> None:
    import seg.trained.prediction

    images, output = tmp_path / "images", tmp_path / "output"
    images.mkdir()
    for index in range(6):  # six sizes: no two images can share a batch
        Image.fromarray(np.zeros((20 + index, 24, 3), np.uint8)).save(images / f"{index}.png")
    before_any_output = []
    read_image = seg.trained.prediction.read_image

    def reading(path: Path, **kwargs) -> np.ndarray:
        if not any(output.glob("*.png")):
            before_any_output.append(path.name)
        return read_image(path, **kwargs)

    monkeypatch.setattr(seg.trained.prediction, "read_image", reading)
    assert predict(predict_config(checkpoint, images, output, "batch_size=2")) == []
    assert len(before_any_output) <= 2, before_any_output
    assert len(list(output.glob("*_overlay.jpg"))) == 6


def test_batches_hold_one_size_and_at_most_batch_size_images(monkeypatch) -> None:
    from seg.trained.prediction import same_size_batches

    heights = {"a": 8, "b": 8, "c": 9, "d": 8, "e": 8}
    monkeypatch.setattr("seg.trained.prediction.read_image",
                        lambda path, **kwargs: np.zeros((heights[path.name], 4, 3), np.uint8))
    batches = same_size_batches([Path(name) for name in heights], 2, [])
    # c waits only until two images are held, not until the folder ends
    assert [[path.name for path, _ in batch] for batch in batches] == [
        ["a", "b"], ["c"], ["d", "e"]]


# -- what is segmented, what is skipped ----------------------------------------------------


def nested_images(images: Path) -> None:
    random_images(images, "a.png")
    random_images(images / "sub", "b.png")
    random_images(images / "sub" / "deeper", "c.jpg")
    (images / "notes.txt").write_text("not an image")
    (images / "sub" / "README").write_text("not an image either")


def test_predict_says_what_it_skipped(checkpoint: Path, tmp_path: Path, caplog) -> None:
    images, output = tmp_path / "images", tmp_path / "output"
    nested_images(images)
    caplog.set_level(logging.INFO, logger="seg.predict")
    assert predict(predict_config(checkpoint, images, output)) == []
    assert sorted(p.name for p in output.iterdir()) == ["a.png", "a_overlay.jpg"]
    assert caplog.records[-1].getMessage() == (
        f"skipped in {images}: 1 subfolder (recursive=true segments them) and 1 non-image "
        f"file (.txt; images are {', '.join(IMAGE_SUFFIXES)})")


def test_predict_recursive_keeps_the_subfolders(checkpoint: Path, tmp_path: Path,
                                                caplog) -> None:
    images = tmp_path / "images"
    nested_images(images)
    output = images / "masks"  # inside the input: its masks are never taken for inputs
    caplog.set_level(logging.INFO, logger="seg.predict")
    for overwrite in ("false", "true"):
        assert predict(predict_config(checkpoint, images, output, "recursive=true",
                                      f"overwrite={overwrite}")) == []
    written = sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file())
    assert written == ["a.png", "a_overlay.jpg", "sub/b.png", "sub/b_overlay.jpg",
                       "sub/deeper/c.png", "sub/deeper/c_overlay.jpg"]
    assert "2 non-image files (.txt, no suffix; " in caplog.records[-1].getMessage()


def test_predict_never_writes_into_a_linked_subfolder(checkpoint: Path, tmp_path: Path) -> None:
    images, output = tmp_path / "images", tmp_path / "output"
    before = random_images(images / "sub", "b.png")
    output.mkdir()
    (output / "sub").symlink_to(images / "sub")
    with pytest.raises(FileExistsError, match="output/sub is a link or a file, not a folder"):
        predict(predict_config(checkpoint, images, output, "recursive=true"))
    assert sorted(p.name for p in (images / "sub").iterdir()) == ["b.png"]
    assert (images / "sub" / "b.png").read_bytes() == before["b.png"]


def test_predict_reads_the_first_frame_of_a_gif(checkpoint: Path, tmp_path: Path) -> None:
    images, output = tmp_path / "images", tmp_path / "output"
    images.mkdir()
    frames = [Image.new("RGB", (30, 20), colour) for colour in ("red", "blue")]
    frames[0].save(images / "moving.gif", save_all=True, append_images=frames[1:])
    random_images(images, "still.png")
    assert predict(predict_config(checkpoint, images, output)) == []
    assert Image.open(output / "moving.png").size == (30, 20)


# -- seg-eval and seg-export ---------------------------------------------------------------


def test_eval_keeps_an_earlier_eval_json_unless_told(checkpoint: Path, tmp_path: Path) -> None:
    earlier = tmp_path / "eval.json"
    earlier.write_text("an earlier evaluation")
    cfg = compose_config("eval", f"checkpoint={checkpoint}", "device=cpu")
    with pytest.raises(FileExistsError, match="eval.json holds an earlier evaluation: choose "
                                              "another output_dir, or overwrite=true"):
        evaluate_checkpoint(cfg, tmp_path)
    assert earlier.read_text() == "an earlier evaluation"
    link = tmp_path / "linked"
    link.mkdir()
    (link / "eval.json").symlink_to(earlier)
    again = compose_config("eval", f"checkpoint={checkpoint}", "device=cpu", "overwrite=true")
    with pytest.raises(FileExistsError, match="is a symbolic link"):
        evaluate_checkpoint(again, link)
    assert earlier.read_text() == "an earlier evaluation"
    evaluate_checkpoint(again, tmp_path)
    assert "per_class_iou" in json.loads(earlier.read_text())


def test_export_never_writes_through_a_link(checkpoint: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not seg's to replace")
    (tmp_path / "m.onnx").symlink_to(outside)
    with pytest.raises(FileExistsError, match="m.onnx is a symbolic link"):
        export(compose_config("export", f"checkpoint={checkpoint}",
                              f"output={tmp_path / 'm.onnx'}", "overwrite=true"))
    assert outside.read_text() == "not seg's to replace"


def test_a_failed_export_keeps_the_previous_file(checkpoint: Path, tmp_path: Path,
                                                 monkeypatch) -> None:
    previous = tmp_path / "m.onnx"
    previous.write_bytes(b"an earlier export")

    def full_disk(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("seg.files.os.fsync", full_disk)
    with pytest.raises(ValueError, match="cannot write .*m.onnx .No space left on device"):
        export(compose_config("export", f"checkpoint={checkpoint}", f"output={previous}",
                              "overwrite=true"))
    assert previous.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file
