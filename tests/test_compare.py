"""The upsampling study: running its sweep and aggregating it."""

import json
import logging
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from seg.cli.compare import main, study_commands
from seg.study.report import aggregate, csv_metrics
from seg.study.stats import difference_interval

# the upsampler config behind each label (seg.run_names names it back)
UPSAMPLER_CONFIGS = {"transposed_frozen": {"name": "transposed", "learnable": False},
                     "transposed_kaiming": {"name": "transposed", "init": "kaiming"},
                     "transposed_full": {"name": "transposed", "channelwise": False}}
CLASSES = ("background", "circle", "square")


def evaluation(miou: float, iteration: int | None = None) -> dict:
    """One evaluation's metrics as seg-train writes them; per class, circle follows the
    mIoU and square is absent from val (None)."""
    entry = {} if iteration is None else {"iteration": iteration}
    return {**entry, "mIoU": miou, "boundary_f": miou / 2, "pixel_acc": 0.9, "mean_acc": 0.8,
            "fw_iou": 0.85, "boundary_iou": miou / 3, "checkerboard": 0.01,
            "inference_ms_per_image": 3.0,
            "per_class_iou": {"background": 0.9, "circle": miou, "square": None},
            "per_class_boundary_f": {"background": 0.5, "circle": miou / 2, "square": None}}


def write_run(sweep: Path, number: int, upsampler: str, seed: int, miou: float | None,
              decoder: str = "fcn8s", curve: dict[int, float] | None = None) -> None:
    """A finished run folder (a failed one when ``miou`` is None); ``curve`` (iteration ->
    mIoU) gives it a history, else it is a run of an older sweep with its final metrics
    only."""
    run = sweep / str(number)
    (run / ".hydra").mkdir(parents=True)
    config = {"seed": seed,
              "model": {"encoder": {"name": "simple"}, "decoder": {"name": decoder},
                        "upsampler": UPSAMPLER_CONFIGS.get(upsampler, {"name": upsampler})},
              "trainer": {"max_iters": 100},
              "dataset": {"name": "shapes", "batch_size": 4, "crop_size": 64},
              "optimizer": {"_target_": "torch.optim.AdamW", "lr": 0.001}}
    OmegaConf.save(OmegaConf.create(config), run / ".hydra" / "config.yaml")
    if miou is None:
        return  # a run that failed before writing its metrics
    metrics = {"mIoU": miou, "boundary_f": miou / 2, "pixel_acc": 0.9, "checkerboard": 0.01,
               "upsampler_params": 0 if upsampler == "bilinear" else 100,
               "train_images_per_s": 50.0, "inference_ms_per_image": 3.0}
    if curve is not None:
        metrics.update(evaluation(miou), iterations=max(curve), history=[
            evaluation(value, iteration) for iteration, value in curve.items()])
    (run / "metrics.json").write_text(json.dumps(metrics))


def test_difference_interval_uses_the_exact_t_quantile() -> None:
    """The half width over sd / sqrt(n) is Student's t 0.975 quantile for n - 1 degrees of
    freedom, to 6 decimals, also past 30 of them (40: 2.021, not 30's 2.042)."""
    for diffs, quantile in (([0.0, 1.0], 12.706205), ([0.0, 1.0] * 20 + [0.5], 2.021075)):
        result = difference_interval(diffs)
        half_width = (result["high"] - result["low"]) / 2
        standard_error = statistics.stdev(diffs) / math.sqrt(len(diffs))
        assert half_width / standard_error == pytest.approx(quantile, abs=1e-6)


def test_difference_interval_by_hand() -> None:
    # diffs 0.01, 0.02, 0.03: mean 0.02, sd 0.01, half width 4.3027 * 0.01 / sqrt(3) = 0.0248
    result = difference_interval([0.01, 0.02, 0.03])
    assert result["mean"] == pytest.approx(0.02)
    assert result["low"] == pytest.approx(0.02 - 4.302653 * 0.01 / math.sqrt(3))
    assert result["verdict"] == "no significant difference"  # the interval holds 0
    assert difference_interval([0.019, 0.02, 0.021])["verdict"] == "learned is better"
    assert difference_interval([-0.019, -0.02, -0.021])["verdict"] == "learned is worse"


def test_aggregate_writes_tables_pairs_by_seed_and_lists_failures(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for seed, (fixed, learned) in enumerate([(0.70, 0.72), (0.60, 0.61), (0.65, 0.68)]):
        write_run(sweep, 3 * seed, "bilinear", seed, fixed)
        write_run(sweep, 3 * seed + 1, "transposed", seed, learned)
        write_run(sweep, 3 * seed + 2, "transposed_frozen", seed, fixed)
    write_run(sweep, 9, "pixel_shuffle", 0, None)
    report = aggregate(sweep).read_text()
    # transposed - bilinear per seed: 0.02, 0.01, 0.03 -> mean 0.02, in percentage points
    assert "| fcn8s | transposed | mIoU | 3 | +2.00 |" in report
    assert "| fcn8s | transposed_frozen | mIoU | 3 | +0.00 |" in report
    assert "| fcn8s | bilinear | 3 | 65.00 ± 5.00 |" in report  # mean ± std of 70, 60, 65
    assert "Every run: encoder simple, 100 iterations of batch 4 at 64 px" in report
    assert "Failed runs: 9" in report
    summary = (sweep / "summary.csv").read_text()
    assert summary.splitlines()[0].startswith("decoder,upsampler,seeds,mIoU_mean")
    assert len(summary.splitlines()) == 4  # header + bilinear, transposed, frozen
    # runs without a history (an older sweep): one row each, at their final iteration
    csv_lines = (sweep / "compare.csv").read_text().splitlines()
    assert csv_lines[0] == "decoder,upsampler,seed,iteration," + ",".join(csv_metrics())
    assert len(csv_lines) == 1 + 9 and all(",100," in line for line in csv_lines[1:])
    # the one control the sweep ran: the kernel learned, and the same kernel frozen
    assert ("| fcn8s | transposed - transposed_frozen | learning the kernel | 100 / 100 | 3 |"
            in report)
    assert "transposed_frozen matches transposed: learning the kernel makes no" in report
    assert "not checked, no evaluation at 3/4 of the run" in report
    assert (sweep / "compare.png").stat().st_size > 0


def test_seg_compare_runs_the_sweep_and_writes_every_report(tmp_path, shapes_root) -> None:
    """The study, cut to 2 upsamplers x 2 decoders x 2 seeds of 2 iterations, from an
    encoder pretrained for 3 iterations."""
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "seg.cli.compare", "debug=tiny", f"dataset.root={shapes_root}",
         "dataset.crop_size=48", "pretrain.iterations=3",
         "pretrain.batch_size=2", "model/upsampler=bilinear,transposed",
         "model/decoder=fcn32s,fcn8s", "seed=0,1", f"hydra.sweep.dir={sweep}",
         "study.longer_baseline_seeds=[]"],  # its longer baseline: test_study_resume.py
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list(sweep.glob("*/metrics.json"))) == 8
    encoder = sweep / "pretrained_encoder" / "encoder.pth"
    for run in sweep.glob("*/.hydra/config.yaml"):
        if run.parent.parent.name != "pretrained_encoder":
            assert OmegaConf.load(run).model.encoder.weights == str(encoder)
    for name in ("compare.md", "compare.csv", "summary.csv", "per_class.csv", "compare.png",
                 "curves.png", "examples.png"):
        assert (sweep / name).stat().st_size > 0, name
    report = (sweep / "compare.md").read_text()
    assert "| fcn32s | transposed | mIoU | 2 |" in report
    assert "| fcn8s | transposed | boundary_f | 2 |" in report
    assert "## Where the gain is: transposed - bilinear per class" in report
    # every configuration's lowest-seed model timed at 512 x 512 on the CPU
    cost_rows = report.split("## Inference cost")[1].splitlines()
    assert "ms per 512² image (CPU)" in report
    assert sum(row.startswith(("| fcn32s |", "| fcn8s |")) for row in cost_rows) == 4
    assert "Failed runs: none" in report


def test_pretraining_runs_at_its_own_precision(compose_train, tmp_path, caplog) -> None:
    from seg.cli.pretrain import pretrain_encoder

    cfg = compose_train("+pretrain.iterations=2", "+pretrain.batch_size=2", "+pretrain.lr=0.01",
                        "+pretrain.precision=bf16", "trainer.precision=32")
    with caplog.at_level(logging.INFO, logger="seg.pretrain"):
        encoder = pretrain_encoder(cfg, tmp_path)
    assert "(precision bf16)" in caplog.text and encoder.is_file()


def test_missing_sweep_folder_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--aggregate", str(tmp_path / "nope")])
    assert exit_info.value.code == 1
    assert "nope does not exist" in capsys.readouterr().err


def test_pretraining_without_its_settings_names_them(compose_train, tmp_path) -> None:
    from seg.cli.pretrain import pretrain_encoder

    with pytest.raises(KeyError, match="add compare=default, or \\+pretrain.iterations=N"):
        pretrain_encoder(compose_train(), tmp_path)


@pytest.mark.parametrize("preset", ["default", "quick", "gpu"], ids=["default", "quick", "on-gpu"])
def test_the_study_keeps_its_measured_recipe_whatever_make_train_uses(compose_train,
                                                                       preset: str) -> None:
    # make train's defaults (Dice, poly 0.5) must not leak into the study's runs; its
    # sweeps name their decoders (FCN-8s, FCN-32s), so make train's FCN-4s cannot either
    cfg = compose_train(f"compare={preset}")
    assert cfg.loss.name == "ce"
    assert cfg.scheduler.power == 2


def test_a_preset_whose_encoder_comes_pretrained_skips_the_pretraining(
        tmp_path: Path, monkeypatch) -> None:
    from seg.study import sweep

    pretrained, launched = [], []
    monkeypatch.setattr(sweep, "pretrained_encoder",
                        lambda overrides, folder, command: pretrained.append(folder) or (folder, 0))
    monkeypatch.setattr(sweep, "multirun",
                        lambda command, overrides: launched.append(overrides) or 0)
    folder = tmp_path / "imagenet"
    sweep.run_study(["compare=imagenet", f"hydra.sweep.dir={folder}"], study_commands())
    assert pretrained == [] and len(launched) == 2  # the sweep, then its longer baseline
    assert (folder / "running_time.json").is_file()  # how long it ran, over every start
    assert not any(o.startswith("model.encoder.weights=") for o in launched[0])
    sweep.run_study(["compare=default", f"hydra.sweep.dir={tmp_path / 'default'}"],
                    study_commands())
    assert pretrained == [tmp_path / "default"]
    assert f"model.encoder.weights={tmp_path / 'default'}" in launched[2]


def test_the_random_init_arm_pretrains_the_same_encoder_on_the_dataset(
        compose_train, tmp_path: Path, monkeypatch) -> None:
    from seg.study import sweep

    scratch, imagenet = compose_train("compare=scratch"), compose_train("compare=imagenet")
    assert scratch.model.encoder.weights is None and imagenet.model.encoder.weights
    assert scratch.model.encoder.model_name == imagenet.model.encoder.model_name
    # the runs as imagenet's but for their budget (debug=tiny sets both here)
    assert {k: v for k, v in scratch.trainer.items() if k != "max_iters"} == \
        {k: v for k, v in imagenet.trainer.items() if k != "max_iters"}
    assert scratch.encoder_lr_mult == 0
    pretrained = []
    monkeypatch.setattr(sweep, "pretrained_encoder",
                        lambda overrides, folder, command: pretrained.append(folder) or (folder, 0))
    monkeypatch.setattr(sweep, "multirun", lambda command, overrides: 0)
    sweep.run_study(["compare=scratch", f"hydra.sweep.dir={tmp_path}"], study_commands())
    assert pretrained == [tmp_path]
