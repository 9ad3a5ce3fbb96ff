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


def test_trainer_overhead_measures_both_loops(bench) -> None:
    result = bench.bench_trainer(steps=6, rounds=2)
    assert result["ours"] > 0 and result["bare"] > 0
    assert len(result["ratios"]) == 2 and min(result["ratios"]) <= result["ratio"]
    assert "target >= 0.95" in bench.trainer_report(result)


@pytest.mark.slow
def test_peer_runs_every_side_in_its_own_process(bench) -> None:
    results = bench.bench_peer(steps=1)
    assert set(results) == set(bench.PEER_SIDES)
    assert all(r["images_per_s"] > 0 and r["peak_mb"] > 0 for r in results.values())
    assert results["torchvision"]["ratio"] == 1.0
    assert "fcn_resnet50" in bench.peer_report(results)
