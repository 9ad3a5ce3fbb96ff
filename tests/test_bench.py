"""scripts/bench.py: its generated data and both loader pipelines, on a few images."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from seg.data import VOCSegmentation

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_valid_voc(bench, tmp_path: Path) -> None:
    root = bench.write_voc_like(tmp_path, 4)
    dataset = VOCSegmentation(root, "train")
    sizes = [dataset.load(i)[0].shape[:2] for i in range(4)]
    assert sizes == [(h, w) for w, h in bench.VOC_SIZES]
    masks = [dataset.load(i)[1] for i in range(4)]
    assert all(m.max() == 255 and 0 in m for m in masks)


def test_both_pipelines_give_batches_of_the_crop(bench, tmp_path: Path) -> None:
    root = bench.write_voc_like(tmp_path, 4)
    images, targets = next(iter(bench.reference_loader(root, 2, 0, crop=64)))
    assert images.shape == (2, 3, 64, 64) and targets.shape == (2, 64, 64)
    result = bench.bench_loader(images=4, workers=0, batch_size=2, crop=64, files=4)
    assert result["ours"] > 0 and result["reference"] > 0
    assert result["ratio"] == pytest.approx(result["ours"] / result["reference"])
    assert "images/s" in bench.loader_report(result)
