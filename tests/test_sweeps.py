"""A sweep's run folders are named by what changed, and the sweep ends with a table."""

import json

from seg.cli.sweeps import results_table, run_name, sweep_results, write_layout


def test_run_names_say_what_changed_in_one_folder() -> None:
    assert run_name("model/upsampler=bilinear,seed=1") == "upsampler=bilinear,seed=1"
    assert run_name("optimizer.lr=0.01") == "optimizer.lr=0.01"
    assert "/" not in run_name("model.encoder.weights=/tmp/encoder.pth")
    assert run_name("") == "run"
    assert len(run_name(",".join(f"key{i}=value" for i in range(50)))) <= 120


def test_the_sweep_table_lists_every_run_and_its_failures(tmp_path) -> None:
    for name, metrics in (("0_seed=0", {"mIoU": 0.5, "best_mIoU": 0.6}), ("1_seed=1", None),
                          ("10_seed=10", {"mIoU": 0.25})):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "config.yaml").write_text("seed: 0\n")
        if metrics:
            (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    # a single run kept in the sweep folder, as seg-compare keeps its pretrained encoder
    (tmp_path / "pretrained_encoder" / ".hydra").mkdir(parents=True)
    for file, text in (("config.yaml", "seed: 0\n"), ("hydra.yaml", "hydra:\n  mode: RUN\n")):
        (tmp_path / "pretrained_encoder" / ".hydra" / file).write_text(text)
    (tmp_path / "0_seed=0" / ".hydra" / "hydra.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    results = sweep_results(tmp_path)
    assert [name for name, _ in results] == ["0_seed=0", "1_seed=1", "10_seed=10"]
    table = results_table(results).splitlines()
    assert table[1].split() == ["0_seed=0", "0.5000", "0.6000"]
    assert table[2].split() == ["1_seed=1", "FAILED"]
    assert table[3].split() == ["10_seed=10", "0.2500", "0.2500"]


def test_the_layout_overlays_the_runs_per_metric(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    write_layout(tmp_path)
    accumulator = EventAccumulator(str(tmp_path / "layout"))
    accumulator.Reload()
    (event,) = accumulator.Tensors(metadata.CONFIG_SUMMARY_TAG)
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    titles = {chart.title for category in layout.category for chart in category.chart}
    assert {"val/mIoU", "val/boundary_f", "train/loss"} <= titles
