"""``dataset.cache``: ``auto`` keeps a split's decoded samples in memory when its copies fit
``dataset.cache_budget_mb``; ``true`` and ``false`` mean what they did; a bad value is one
line naming the key."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_module

from seg.cli.command import CONFIG_MODULE
from seg.data import decoding
from seg.data.loader import build_loader
from seg.data.readers import training_split, validation_split
from seg.data.readers.folder import FolderSegmentation
from tests.layouts import random_image, random_labels, save_palette_png


def write_folder(root: Path, count: int, size: tuple[int, int]) -> Path:
    """A folder dataset of ``count`` PNG images of ``size`` (height, width) in train, and
    one more in val (with split lists, each split needs its own)."""
    (root / "images").mkdir(parents=True)
    classes = {"classes": [{"name": "background"}, {"name": "crack"}]}
    (root / "classes.yaml").write_text(yaml.safe_dump(classes))
    stems = [f"tile_{n}" for n in range(count + 1)]
    for n, stem in enumerate(stems):
        random_image(n, size).save(root / "images" / f"{stem}.png")
        save_palette_png(random_labels(n, [0, 1], size), root / "masks" / f"{stem}.png")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("\n".join(stems[:-1]) + "\n")
    (root / "splits" / "val.txt").write_text(stems[-1] + "\n")
    return root


@pytest.fixture
def file_reads(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """How many times each image or mask file is read (decoding reads it whole)."""
    reads: Counter = Counter()
    read_file = decoding.read_file

    def counted(path: Path, *args: object) -> bytes:
        reads[path] += 1
        return read_file(path, *args)

    monkeypatch.setattr(decoding, "read_file", counted)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)  # one training process
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    return reads


def one_epoch(dataset: FolderSegmentation) -> list[dict]:
    return list(build_loader(dataset, batch_size=2, train=True, num_workers=0))


def test_auto_caches_a_small_split_so_the_second_epoch_reads_no_file(
        tmp_path: Path, file_reads: Counter) -> None:
    root = write_folder(tmp_path / "small", count=6, size=(40, 48))
    dataset = FolderSegmentation(root, "train", cache="auto")
    first = one_epoch(dataset)
    assert sum(file_reads.values()) == 12 and set(file_reads.values()) == {1}
    assert one_epoch(dataset) and sum(file_reads.values()) == 12  # nothing read again
    assert sorted(dataset.cache) == list(range(6))
    plain = FolderSegmentation(root, "train", cache=False)
    image, mask = dataset.load(3)  # the decoded arrays, before any augmentation
    assert (image == plain.load(3)[0]).all() and (mask == plain.load(3)[1]).all()
    assert sum(batch["image"].shape[0] for batch in first) == 6


def test_auto_does_not_cache_a_split_over_the_budget(tmp_path: Path, file_reads: Counter,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    root = write_folder(tmp_path / "large", count=6, size=(256, 256))  # 1.5 MB decoded
    dataset = FolderSegmentation(root, "train", cache="auto", cache_budget_mb=1)
    with caplog.at_level("INFO", logger="seg.data"):
        one_epoch(dataset)
    one_epoch(dataset)
    assert dataset.cache is None and sum(file_reads.values()) == 24  # read every epoch
    assert "over the budget of 1 MB (dataset.cache_budget_mb)" in caplog.text
    roomier = FolderSegmentation(root, "train", cache="auto", cache_budget_mb=2)
    roomier.load(0)
    assert list(roomier.cache) == [0]  # the same split fits a 2 MB budget


def test_auto_counts_a_copy_per_loader_worker(tmp_path: Path, file_reads: Counter) -> None:
    root = write_folder(tmp_path / "split", count=3, size=(256, 256))  # 0.75 MB a copy
    in_main = FolderSegmentation(root, "train", cache="auto", cache_budget_mb=1)
    build_loader(in_main, batch_size=1, train=True, num_workers=0)  # decides, starts none
    in_workers = FolderSegmentation(root, "train", cache="auto", cache_budget_mb=1)
    build_loader(in_workers, batch_size=1, train=True, num_workers=2)
    assert in_main.cache == {} and in_workers.cache is None
    assert not file_reads  # decided from the headers: nothing decoded


def test_true_caches_and_false_does_not_whatever_the_budget(tmp_path: Path,
                                                          file_reads: Counter) -> None:
    root = write_folder(tmp_path / "large", count=6, size=(256, 256))
    cached = FolderSegmentation(root, "train", cache=True, cache_budget_mb=1)
    one_epoch(cached)
    one_epoch(cached)
    assert len(cached.cache) == 6 and sum(file_reads.values()) == 12
    file_reads.clear()
    plain = FolderSegmentation(root, "train", cache=False, cache_budget_mb=100_000)
    one_epoch(plain)
    one_epoch(plain)
    assert plain.cache is None and sum(file_reads.values()) == 24


def compose_folder(root: Path, *overrides: str):
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name="train", overrides=[
            "debug=tiny", "dataset=folder", f"dataset.root={root}", "dataset.crop_size=32",
            *overrides])


def test_auto_is_the_default_and_reaches_both_splits(tmp_path: Path) -> None:
    cfg = compose_folder(write_folder(tmp_path / "small", count=4, size=(40, 48)),
                         "dataset.cache_budget_mb=64")
    assert cfg.dataset.cache == "auto"
    train, val = training_split(cfg.dataset), validation_split(cfg.dataset)
    assert (train.cache_planned, train.cache_budget_mb) == (False, 64)
    assert (val.cache_planned, val.cache_budget_mb) == (False, 64)
    assert isinstance(train[0]["image"], torch.Tensor) and list(train.cache) == [0]


@pytest.mark.parametrize("value", ["maybe", 1, None])
def test_a_bad_cache_value_is_one_line_naming_the_key(tmp_path: Path, value: object) -> None:
    root = write_folder(tmp_path / "small", count=2, size=(40, 48))
    with pytest.raises(ValueError) as raised:
        FolderSegmentation(root, "train", cache=value)
    assert str(raised.value) == f"dataset.cache={value!r}: use one of true, false, auto"


def test_a_bad_cache_setting_in_the_config_is_one_line(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "small", count=2, size=(40, 48))
    for override, message in (
            ("dataset.cache=maybe", "dataset.cache='maybe': use one of true, false, auto"),
            ("dataset.cache_budget_mb=0",
             "dataset.cache_budget_mb=0: use a positive integer (MB) or auto")):
        with pytest.raises(ValueError) as raised:
            training_split(compose_folder(root, override).dataset)
        assert str(raised.value) == message


def test_the_memory_files_are_read_as_regular_files_only(tmp_path: Path, monkeypatch) -> None:
    """A FIFO where a memory file should be would block ``open().read()`` for ever; a link
    to /dev/zero would never end. Both are read as "unknown"."""
    import os
    import signal

    from seg.data import cache

    os.mkfifo(tmp_path / "meminfo")
    (tmp_path / "memory.max").symlink_to("/dev/zero")
    (tmp_path / "memory.current").write_text("1000\n")
    monkeypatch.setattr(cache, "MEMINFO", str(tmp_path / "meminfo"))
    monkeypatch.setattr(cache, "CGROUP_MEMORY", (
        (str(tmp_path / "memory.max"), str(tmp_path / "memory.current")),))
    previous = signal.signal(signal.SIGALRM, lambda *args: pytest.fail("a read blocked"))
    signal.alarm(30)
    try:
        assert cache.available_memory() is None
        assert cache.cache_budget_bytes("auto") == cache.UNKNOWN_MEMORY_BUDGET_MB * cache.MB
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    (tmp_path / "meminfo").unlink()
    (tmp_path / "meminfo").write_text("MemTotal: 8 kB\nMemAvailable:    4 kB\n")
    assert cache.available_memory() == 4096
