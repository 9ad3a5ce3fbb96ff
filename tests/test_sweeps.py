"""A sweep's run folders are named by what changed, and the sweep ends with a table."""

import json

from omegaconf import OmegaConf

from seg.cli.sweeps import (
    SWEPT_KEYS_VARIABLE,
    results_table,
    run_name,
    seed_table,
    sweep_results,
    swept_keys,
    write_layout,
)


def test_run_names_say_what_changed_in_one_folder(monkeypatch) -> None:
    monkeypatch.delenv(SWEPT_KEYS_VARIABLE, raising=False)
    assert run_name("model/upsampler=bilinear,seed=1") == "upsampler-bilinear+seed-1"
    assert run_name("optimizer.lr=0.006260326907499732") == "optimizer.lr-0.00626"
    assert run_name("optimizer.lr=1e-05,seed=2") == "optimizer.lr-1e-05+seed-2"
    assert run_name("dataset.scale_range=[0.5,2.0],seed=0") == (
        "dataset.scale_range-_0.5_2.0_+seed-0")  # the list's comma does not split it
    assert "/" not in run_name("model.encoder.weights=/tmp/encoder.pth")
    assert run_name("") == "run"
    assert len(run_name(",".join(f"key{i}=value" for i in range(50)))) <= 120


def test_a_sweeps_run_names_hold_only_the_keys_it_varies(monkeypatch) -> None:
    monkeypatch.setenv(SWEPT_KEYS_VARIABLE, "model/upsampler,optimizer.lr")
    name = run_name("model/upsampler=transposed,optimizer.lr=0.012,trainer.eval_every=30")
    assert name == "upsampler-transposed+optimizer.lr-0.012"


def test_a_run_name_is_a_path_hydra_takes_unquoted() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    name = run_name("model/upsampler=bilinear_conv,seed=1,optimizer.lr=0.0001234567")
    override = OverridesParser.create().parse_override(f"trainer.resume=out/3_{name}")
    assert not override.is_sweep_override() and override.value() == f"out/3_{name}"


def test_the_swept_keys_come_from_the_command_line_and_the_sweeper_params() -> None:
    config = OmegaConf.create({"hydra": {
        "overrides": {"task": ["model/upsampler=bilinear,transposed", "trainer.max_iters=30",
                               "optimizer.lr=interval(0.001,0.1)", "+extra=1"]},
        "sweeper": {"params": {"seed": "0,1,2", "model/decoder": "fcn8s"}}}})
    assert swept_keys(config) == ["model/upsampler", "optimizer.lr", "seed"]


def test_runs_that_differ_only_by_seed_are_one_line_with_mean_and_spread() -> None:
    results = [("0_upsampler-bilinear+seed-0", {"mIoU": 0.5}),
               ("1_upsampler-bilinear+seed-1", {"mIoU": 0.7}),
               ("2_seed-0+upsampler-transposed", {"mIoU": 0.6}),
               ("3_seed-1+upsampler-transposed", None)]
    lines = seed_table(results).splitlines()
    assert lines[1].split() == ["upsampler-bilinear", "2", "0.6000", "±", "0.1414"]
    assert lines[2].split() == ["upsampler-transposed", "1", "0.6000"]
    assert seed_table(results[:1] + results[2:3]) == ""  # no configuration has two runs


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
    assert {"eval/mIoU", "eval_metrics/boundary_f", "train/loss"} <= titles
