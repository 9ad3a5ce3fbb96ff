"""Split lists are all or nothing: where a dataset has any split list, every split read
needs its own, a regular file read through seg.files (a FIFO never hangs, /dev/zero and a
folder are one line); the random split is only for a folder dataset with no list at all.
``seg-data check`` reports ids that are in both the train and the val split."""

from __future__ import annotations

from pathlib import Path

import pytest

from seg.cli.data import main as seg_data
from seg.data.readers.folder import FolderSegmentation
from seg.data.readers.voc import TRAIN_AUG_LIST, VOCAugSegmentation, VOCSegmentation
from seg.errors import UserError
from tests.layouts import make_folder, make_sbd, make_voc, write_list
from tests.test_reader_safety import no_hang, special_file  # noqa: F401 - no_hang: autouse

KINDS = ("missing", "a FIFO", "a character device", "a folder", "a broken link")


def unusable(path: Path, kind: str) -> Path:
    """``path`` made missing, a FIFO, a link to /dev/zero, a folder or a broken link."""
    path.unlink(missing_ok=True)
    if kind == "a broken link":
        path.symlink_to(path.parent / "nowhere.txt")
    elif kind != "missing":
        special_file(path, kind)
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_a_folder_with_a_val_list_needs_a_train_list(tmp_path: Path, kind: str) -> None:
    """The train split was the random split of all images, 3 of the 4 val ids among them."""
    root = make_folder(tmp_path / "folder", splits=True)
    train_list = unusable(root / "splits" / "train.txt", kind)
    with pytest.raises(UserError) as raised:
        FolderSegmentation(root, "train")
    message = str(raised.value)
    assert str(train_list) in message and len(message.splitlines()) == 1
    assert message.endswith("with split lists in splits/ (val.txt), each split needs its own: "
                            "list the train stems in train.txt, one per line, or remove "
                            "splits/ to split at random")
    assert FolderSegmentation(root, "val").ids == ["tile_004", "tile_005"]


def test_a_missing_train_list_is_named_as_missing(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "folder", splits=True)
    (root / "splits" / "train.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"^split file not found: .*splits/train.txt; "):
        FolderSegmentation(root, "train")


def test_a_folder_without_lists_splits_at_random(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "folder", count=10)
    (root / "splits").mkdir()  # an empty folder holds no list
    train = FolderSegmentation(root, "train", val_fraction=0.3)
    val = FolderSegmentation(root, "val", val_fraction=0.3)
    assert len(val) == 3 and not set(train.ids) & set(val.ids)
    assert "split (30% val, seed 0)" in train.source


def test_a_splits_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "folder")
    (root / "splits").write_text("tile_000\n")
    with pytest.raises(NotADirectoryError, match=r"splits is not a folder: make it a folder of "
                                                  "split lists"):
        FolderSegmentation(root, "train")


@pytest.mark.parametrize("kind", KINDS[1:4])
def test_a_voc_list_that_is_not_a_file_is_one_line(tmp_path: Path, kind: str) -> None:
    root = make_voc(tmp_path / "VOC2012")
    split_file = unusable(root / "ImageSets" / "Segmentation" / "train.txt", kind)
    with pytest.raises(UserError) as raised:
        VOCSegmentation(root, "train")
    message = str(raised.value)
    assert message.startswith(f"split file {split_file} ") and "not found" not in message
    assert message.endswith("; set dataset.root to the VOC2012 folder (see data/README.md)")


def test_a_list_too_large_is_refused_before_it_is_read(tmp_path: Path, monkeypatch) -> None:
    from seg.data import base

    root = make_voc(tmp_path / "VOC2012")
    monkeypatch.setattr(base, "MAX_SPLIT_LIST_BYTES", 8)
    with pytest.raises(UserError, match=r"train.txt holds \d+ bytes, more than such a file"):
        VOCSegmentation(root, "train")


def test_a_train_aug_list_that_is_a_fifo_is_not_merged_around(tmp_path: Path) -> None:
    """A train_aug.txt there is read, whatever it is: a FIFO is one line, not a quiet
    merge of the SBD and VOC lists in its place."""
    voc = make_voc(tmp_path / "VOC2012")
    sbd = make_sbd(tmp_path / "benchmark_RELEASE", voc)
    fifo = unusable(voc / TRAIN_AUG_LIST, "a FIFO")
    with pytest.raises(UserError, match=f"^split file {fifo} is not a regular file"):
        VOCAugSegmentation(voc, sbd, "train_aug")


def test_check_lists_a_missing_train_list_and_exits_1(tmp_path: Path, capsys) -> None:
    root = make_folder(tmp_path / "folder", splits=True)
    train_list = unusable(root / "splits" / "train.txt", "a FIFO")
    code = seg_data(["check", "dataset=folder", f"dataset.root={root}",
                     "dataset.num_workers=0"])
    out = capsys.readouterr().out
    assert code == 1 and "no problems" not in out
    assert f"[train] split file {train_list} is not a regular file" in out
    assert "val: 2 samples, 2 ok, 0 problem(s)" in out


def test_check_reports_ids_in_both_splits(tmp_path: Path, capsys) -> None:
    root = make_folder(tmp_path / "folder", splits=True, count=8)
    write_list(root / "splits" / "val.txt", ["tile_001", "tile_002", "tile_003", "tile_006"])
    code = seg_data(["check", "dataset=folder", f"dataset.root={root}",
                     "dataset.num_workers=0"])
    out = capsys.readouterr().out
    assert code == 1
    assert ("[val] ids in both splits: 3 of the 4 val ids are also train ids ('tile_001', "
            "'tile_002', 'tile_003'): list each id in one split only") in out
    assert "val: 4 samples, 4 ok, 1 problem(s)" in out
    assert out.splitlines()[-1] == "summary: val: 1 problem(s) (1 ids in both splits)"


def test_check_passes_disjoint_lists(tmp_path: Path, capsys) -> None:
    root = make_folder(tmp_path / "folder", splits=True)
    code = seg_data(["check", "dataset=folder", f"dataset.root={root}",
                     "dataset.num_workers=0"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "no problems" in out
